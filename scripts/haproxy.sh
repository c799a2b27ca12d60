#!/usr/bin/env bash
# HAProxy for the router benchmark's comparison (bench/bench_router.py).
#
#   scripts/haproxy.sh         install Debian's haproxy package when no haproxy binary is
#                              found (needs root), then print its version
#
# Nothing is started here, and the package's own service is not enabled: the benchmark
# runs haproxy itself, on loopback, with a configuration of its own.
set -euo pipefail

log() { echo "haproxy.sh: $*" >&2; }

find_haproxy() {
    command -v haproxy 2>/dev/null || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; } || true
}

binary=$(find_haproxy)
if [[ -z "$binary" ]]; then
    if [[ $EUID -ne 0 ]]; then
        log "haproxy is not installed and we are not root: install Debian's haproxy package"
        exit 2
    fi
    log "installing HAProxy (apt-get install haproxy)"
    export DEBIAN_FRONTEND=noninteractive
    # No service start during the installation (no init system in containers, and the
    # benchmark needs none): policy-rc.d refuses it for the duration.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends haproxy >&2
    binary=$(find_haproxy)
    [[ -n "$binary" ]] || { log "haproxy is still missing after the installation"; exit 1; }
fi
version=$("$binary" -v)
log "${version%%$'\n'*}"
