#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests.
#
#   scripts/postgres.sh start DIR        initialise a cluster in DIR (if needed), start it on
#                                        127.0.0.1 with a free port, create the confide_test
#                                        database, print its URL on stdout
#   scripts/postgres.sh stop DIR         stop the server of DIR (a no-op when not running)
#   scripts/postgres.sh run -- CMD...    start a server in a fresh temporary folder, run CMD
#                                        with CONFIDE_TEST_POSTGRES_URL exported, then stop the
#                                        server and remove the folder; exits with CMD's status
#
# Installs Debian's postgresql package when no server binaries are found (needs root).
# As root, the cluster runs as the `postgres` user (initdb refuses root). Only a socket in DIR
# and 127.0.0.1 are listened on; authentication is `trust`: never use this for real data.
set -euo pipefail

DB_NAME=confide_test

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        if [[ $EUID -ne 0 ]]; then
            log "PostgreSQL is not installed and we are not root: install the postgresql package"
            exit 2
        fi
        log "installing PostgreSQL (apt-get install postgresql)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin | sort -V | tail -n 1)
    fi
    echo "$dir"
}

# Run a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local dir=$1 bin port
    bin=$(pg_bin)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    if ! as_owner test -w "$dir"; then
        log "the postgres user cannot write in $dir (are its parent folders private?); use a folder under /tmp"
        exit 2
    fi
    if [[ -f "$dir/data/postmaster.pid" && -f "$dir/port" ]] &&
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" status >/dev/null 2>&1; then
        echo "postgresql+psycopg://postgres@127.0.0.1:$(cat "$dir/port")/$DB_NAME"
        return 0
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
            --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    port=$(free_port)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 --silent \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >&2 || {
        cat "$dir/server.log" >&2
        exit 1
    }
    echo "$port" >"$dir/port"
    as_owner "$bin/psql" --host="$dir" --port="$port" --username=postgres --dbname=postgres \
        --quiet --no-psqlrc --set=ON_ERROR_STOP=1 \
        --command="SET client_min_messages = warning" \
        --command="DROP DATABASE IF EXISTS $DB_NAME" --command="CREATE DATABASE $DB_NAME" >&2
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DB_NAME"
}

stop() {
    local dir=$1 bin
    if [[ ! -f "$dir/data/postmaster.pid" ]]; then
        return 0
    fi
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait --silent stop >&2 || true
}

run() {
    local dir url status=0
    dir=$(mktemp -d /tmp/confide-postgres.XXXXXX)
    # shellcheck disable=SC2064  # expand $dir now
    trap "stop '$dir'; rm -rf '$dir'" EXIT
    url=$(start "$dir")
    log "PostgreSQL at $url"
    CONFIDE_TEST_POSTGRES_URL=$url "$@" || status=$?
    return "$status"
}

case "${1:-}" in
start)
    [[ $# -eq 2 ]] || { log "usage: $0 start DIR"; exit 2; }
    start "$2"
    ;;
stop)
    [[ $# -eq 2 ]] || { log "usage: $0 stop DIR"; exit 2; }
    stop "$2"
    ;;
run)
    shift
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -ge 1 ]] || { log "usage: $0 run -- CMD..."; exit 2; }
    run "$@"
    ;;
*)
    log "usage: $0 start DIR | stop DIR | run -- CMD..."
    exit 2
    ;;
esac
