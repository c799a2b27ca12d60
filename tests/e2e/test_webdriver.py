"""The WebDriver harness itself (tests/support/webdriver.py) against a page served here.

A form whose submission a script of the page turns into text: navigating, typing,
clicking, reading text, running a script and taking a screenshot all go through
chromedriver and a real headless Chromium.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from support.webdriver import WebDriverError, chromium

pytestmark = pytest.mark.slow

PAGES: Final = {
    "/": (
        "text/html",
        b"<!doctype html><title>harness</title>"
        b"<form id=f><input name=who><button type=submit>go</button></form>"
        b"<p id=out>nobody</p><script src=/page.js></script>",
    ),
    "/page.js": (
        "text/javascript",
        b"document.getElementById('f').addEventListener('submit', (e) => {"
        b" e.preventDefault();"
        b" document.getElementById('out').textContent = 'hello ' + e.target.who.value; });",
    ),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
        found = PAGES.get(self.path)
        media, body = found if found is not None else ("text/plain", b"not found")
        code = 200 if found is not None else 404
        self.send_response(code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_harness_drives_a_page(site: str, tmp_path: Path) -> None:
    with chromium(tmp_path) as browser:
        browser.navigate(site + "/")
        assert browser.title == "harness"
        assert browser.find("#out").text == "nobody"
        browser.find("input[name=who]").send_keys("<world>")
        browser.find("button[type=submit]").click()
        browser.wait_for_text("#out", "hello <world>")
        assert browser.execute("return arguments[0] + document.title;", "a ") == "a harness"
        shot = browser.screenshot(tmp_path / "shot.png")
        assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        with pytest.raises(WebDriverError, match="no such element"):
            browser.find("#absent")
        with pytest.raises(WebDriverError, match="did not happen"):
            browser.wait_for_text("#out", "never", timeout=0.3)
    # Cleanup: chromedriver and the browser it started (its process group) are gone.
    with pytest.raises(ProcessLookupError):
        os.killpg(browser.driver_pid, 0)
