#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the browser tests (tests/e2e/test_browser_*.py,
# driven through tests/support/webdriver.py).
#
#   scripts/chromium.sh        install Debian's chromium and chromium-driver packages when
#                              /usr/bin/chromium or /usr/bin/chromedriver is missing (needs
#                              root), then print their versions
#
# Nothing is started here: the tests start chromedriver (which starts chromium --headless).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

log() { echo "chromium.sh: $*" >&2; }

if [[ ! -x "$CHROMIUM" || ! -x "$CHROMEDRIVER" ]]; then
    if [[ $EUID -ne 0 ]]; then
        log "chromium or chromedriver is missing and we are not root:" \
            "install Debian's chromium and chromium-driver packages"
        exit 2
    fi
    log "installing Chromium and its WebDriver (apt-get install chromium chromium-driver)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
"$CHROMIUM" --version >&2
"$CHROMEDRIVER" --version >&2
