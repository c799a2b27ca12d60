#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/e2e/test_browser_proxy.py).
#
#   scripts/chromium.sh        install Debian's chromium package when /usr/bin/chromium is
#                              missing (needs root), then print its version
#
# Nothing is started here: the tests run chromium --headless themselves.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

log() { echo "chromium.sh: $*" >&2; }

if [[ ! -x "$CHROMIUM" ]]; then
    if [[ $EUID -ne 0 ]]; then
        log "chromium is not installed and we are not root: install Debian's chromium package"
        exit 2
    fi
    log "installing Chromium (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium >&2
fi
"$CHROMIUM" --version >&2
