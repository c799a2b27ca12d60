"""A small W3C WebDriver client: headless Chromium driven through Debian's chromedriver.

Just what the browser tests need (navigate, find, click, type, read, screenshot,
run a script), spoken over httpx to a chromedriver started for one test and
always stopped afterwards. ``scripts/chromium.sh`` installs both packages.

Chromium runs headless with ``--no-sandbox`` (we run as root in a container, and
Chromium's sandbox refuses root), a fresh profile in the test's temporary folder,
and bounded timeouts: every HTTP call to the driver, every page load, every wait.

chromedriver cannot listen on port 0 and say which port it took: a free port is
found by binding port 0 and closing it, then passed with ``--port``; if another
process takes it in between, chromedriver exits, and the start is retried on a new
port.

Example::

    with chromium(tmp_path) as browser:
        browser.navigate("http://127.0.0.1:8080/console/")
        browser.find("input[name=token]").send_keys(token)
        browser.find("button[type=submit]").click()
        browser.wait_for_text("h1", "Apps")
        browser.screenshot(tmp_path / "apps.png")
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
#: The key of an element reference in WebDriver's JSON (fixed by the W3C spec).
ELEMENT_KEY: Final = "element-6066-11e4-a52e-4f735466cecf"
#: chromedriver listening, or a new session (Chromium started).
START_DEADLINE: Final = 60.0
#: One command to the driver (a page load included).
COMMAND_TIMEOUT: Final = 60.0
#: A page load, as the browser bounds it.
PAGE_LOAD_TIMEOUT: Final = 30.0
#: A script run with :meth:`Browser.execute`.
SCRIPT_TIMEOUT: Final = 10.0
#: Waiting for something to appear on a page.
WAIT_DEADLINE: Final = 30.0
#: How often a wait looks again.
POLL_INTERVAL: Final = 0.05
#: Tries to start chromedriver on a free port (another process may take the port first).
START_ATTEMPTS: Final = 5
#: The browser window (and so each screenshot), in CSS pixels.
WINDOW: Final = (1280, 900)

T = TypeVar("T")


class WebDriverError(Exception):
    """The driver refused a command, or something did not appear in time."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Element:
    """An element of the current page (a WebDriver element reference)."""

    browser: Browser
    id: str

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self.browser.call(method, f"/element/{self.id}{path}", body)

    def click(self) -> None:
        self._call("POST", "/click", {})

    def send_keys(self, text: str) -> None:
        self._call("POST", "/value", {"text": text})

    def clear(self) -> None:
        self._call("POST", "/clear", {})

    @property
    def text(self) -> str:
        """The rendered text, as a user sees it."""
        value: str = self._call("GET", "/text")
        return value

    def attribute(self, name: str) -> str | None:
        value: str | None = self._call("GET", f"/attribute/{name}")
        return value

    def find(self, css: str) -> Element:
        return self.browser.element_of(self._call("POST", "/element", _css(css)))


def _css(selector: str) -> dict[str, str]:
    return {"using": "css selector", "value": selector}


class Browser:
    """One WebDriver session of headless Chromium."""

    def __init__(self, client: httpx.Client, session_id: str, driver_pid: int) -> None:
        self._client = client
        self.session_id = session_id
        #: chromedriver's pid, also its process group's id (the browser runs in that group).
        self.driver_pid = driver_pid

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One WebDriver command of this session; its ``value``, or :class:`WebDriverError`."""
        response = self._client.request(
            method, f"/session/{self.session_id}{path}", json=body, timeout=COMMAND_TIMEOUT
        )
        return _value(response)

    def element_of(self, value: Any) -> Element:
        return Element(self, value[ELEMENT_KEY])

    # -- pages -------------------------------------------------------------------------------

    def navigate(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        value: str = self.call("GET", "/url")
        return value

    @property
    def title(self) -> str:
        value: str = self.call("GET", "/title")
        return value

    @property
    def source(self) -> str:
        value: str = self.call("GET", "/source")
        return value

    def back(self) -> None:
        self.call("POST", "/back", {})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page."""
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> Path:
        """A PNG of the window, written to ``path``."""
        png = base64.b64decode(self.call("GET", "/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return path

    # -- elements ----------------------------------------------------------------------------

    def find(self, css: str) -> Element:
        """The first element matching ``css`` now, or :class:`WebDriverError`."""
        return self.element_of(self.call("POST", "/element", _css(css)))

    def find_all(self, css: str) -> list[Element]:
        return [self.element_of(v) for v in self.call("POST", "/elements", _css(css))]

    def wait(self, what: str, found: Callable[[], T | None], timeout: float = WAIT_DEADLINE) -> T:
        """``found()`` once it returns something (polled), or :class:`WebDriverError`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = found()
            except WebDriverError:
                value = None  # not there yet (or the page is changing)
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise WebDriverError(f"{what} did not happen in {timeout}s (at {self.url})")
            time.sleep(POLL_INTERVAL)

    def wait_for(self, css: str, timeout: float = WAIT_DEADLINE) -> Element:
        return self.wait(f"an element {css!r} to appear", lambda: self.find(css), timeout)

    def wait_for_text(self, css: str, text: str, timeout: float = WAIT_DEADLINE) -> Element:
        def has_text() -> Element | None:
            element = self.find(css)
            return element if text in element.text else None

        return self.wait(f"{text!r} to appear in {css!r}", has_text, timeout)


def _value(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise WebDriverError(
            f"the driver answered {response.status_code} without JSON: {response.text[:200]}"
        ) from None
    value = body.get("value") if isinstance(body, dict) else None
    if response.status_code >= 400:
        error = value if isinstance(value, dict) else {}
        raise WebDriverError(
            f"{error.get('error', response.status_code)}: {str(error.get('message', ''))[:500]}"
        )
    return value


def chromium_arguments(profile: Path, extra: Sequence[str] = ()) -> list[str]:
    """Chromium's command line: headless, no sandbox (root), a fresh profile, nothing online."""
    return [
        "--headless",
        "--no-sandbox",  # we run as root in a container: Chromium's sandbox refuses root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        *extra,
    ]


class _Driver:
    """A chromedriver process listening on a port of its own."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        failures = []
        for _ in range(START_ATTEMPTS):
            port = _free_port()
            with log_path.open("ab") as log:
                self.proc = subprocess.Popen(  # noqa: S603  (a fixed binary, our arguments)
                    [str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=COMMAND_TIMEOUT)
            if self._ready():
                return
            failures.append(f"port {port}: exit {self.proc.returncode}")
            self.stop()
        raise WebDriverError(
            f"chromedriver did not start ({'; '.join(failures)}): {self.log_tail()}"
        )

    def _ready(self) -> bool:
        """Polls ``/status`` until ready; false once the process exited (its port was taken)."""
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status = self.client.get("/status", timeout=2.0)
                value = status.json().get("value", {})
                if status.status_code == 200 and value.get("ready") is True:
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(POLL_INTERVAL)
        raise WebDriverError(f"chromedriver was not ready in {START_DEADLINE}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop chromedriver and whatever it started (its own process group)."""
        self.client.close()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # A browser left behind in the group: killed, and waited for (bounded).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(POLL_INTERVAL)
        raise WebDriverError(f"chromedriver's process group {self.proc.pid} outlived SIGKILL")


@contextmanager
def chromium(tmp: Path, *, args: Sequence[str] = ()) -> Iterator[Browser]:
    """Headless Chromium for one test, its profile and driver log under ``tmp``.

    The session is deleted (Chromium quits) and chromedriver stopped on the way
    out, whatever happened.
    """
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            raise WebDriverError(
                f"{binary} is missing: run scripts/chromium.sh "
                "(installs Debian's chromium and chromium-driver)"
            )
    tmp.mkdir(parents=True, exist_ok=True)
    driver = _Driver(tmp / "chromedriver.log")
    try:
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": str(CHROMIUM),
                "args": chromium_arguments(tmp / "chromium-profile", args),
            },
            "timeouts": {
                "pageLoad": int(PAGE_LOAD_TIMEOUT * 1000),
                "script": int(SCRIPT_TIMEOUT * 1000),
                "implicit": 0,
            },
        }
        created = _value(
            driver.client.post(
                "/session",
                json={"capabilities": {"alwaysMatch": capabilities}},
                timeout=START_DEADLINE,
            )
        )
        browser = Browser(driver.client, created["sessionId"], driver.proc.pid)
        try:
            yield browser
        finally:
            try:
                driver.client.delete(f"/session/{browser.session_id}", timeout=COMMAND_TIMEOUT)
            except httpx.HTTPError:
                pass  # the driver is stopped next anyway
    finally:
        driver.stop()
