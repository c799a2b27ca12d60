#!/usr/bin/env bash
# The compiled relay's tests under AddressSanitizer and UndefinedBehaviorSanitizer (ADR 0028).
#
#   scripts/relay_sanitizers.sh [pytest arguments]
#
# Builds confide.operator._relaycore with -fsanitize=address,undefined into a copy of src/
# (the installed build is not touched), then runs the tests that drive the compiled engine
# with that copy first on the path, every allocation through malloc (PYTHONMALLOC=malloc, so
# the sanitizer also sees the pairs' own memory) and the sanitizers' runtimes preloaded.
# Fails on a failed test or on any sanitizer report, which it prints. Needs gcc and the
# project's .venv (make .venv/.installed); not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "relay_sanitizers.sh: $*" >&2; }

python=.venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r src "$tmp/src"
rm -f "$tmp"/src/confide/operator/_relaycore*.so
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror -fPIC -shared -I"$include" \
    src/confide/operator/_relaycore.c -o "$tmp/src/confide/operator/_relaycore$suffix"

report="$tmp/report"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:log_path=$report" UBSAN_OPTIONS="log_path=$report"
export PYTHONMALLOC=malloc PYTHONPATH="$tmp/src"
where=$("$python" -c 'import confide.operator._relaycore as m; print(m.__file__)')
case "$where" in
    "$tmp"/*) log "testing $where" ;;
    *) log "the sanitized build is not the one imported ($where)"; exit 1 ;;
esac
status=0
.venv/bin/pytest -q -p no:cacheprovider -k "not python" \
    tests/unit/operator/test_relay_core.py tests/adversarial/test_relay_peers.py \
    tests/unit/operator/test_router_relay.py "$@" || status=$?
if compgen -G "$report*" >/dev/null; then
    cat "$report"*
    log "the sanitizers reported the errors above"
    exit 1
fi
exit "$status"
