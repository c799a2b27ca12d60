"""End to end: a real browser (headless Chromium, through chromedriver) uses the operator console.

Through a real ``confide operator serve`` with a simulated-TEE app: sign in with an
API token, list the apps, open one and watch its log grow live (the runtime's
"serving" line and a ``<script>`` payload the app prints, both appended by the
console's script as text), stop it through the confirmation step, and see the
projects, plans and tokens. Debian's chromium and chromium-driver come from
``scripts/chromium.sh``; the browser is driven by :mod:`support.webdriver`.

Screenshots of each page are taken on every run, into the test's folder; with
``CONFIDE_SCREENSHOTS=1`` into ``docs/screenshots/``, for the README::

    CONFIDE_SCREENSHOTS=1 .venv/bin/pytest tests/e2e/test_browser_console.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

import pytest

from support.operators import (
    START_DEADLINE,
    configure_when_ready,
    create_token,
    deploy,
    operator_running,
    wait_status,
)
from support.runtimes import EXAMPLES, CodeUnderTest
from support.webdriver import Browser, chromium

pytestmark = pytest.mark.slow

#: What the app prints when it starts: it must reach the page as text, and run nowhere.
PAYLOAD: Final = (
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
)


def _app_printing_a_payload(tmp: Path) -> CodeUnderTest:
    """examples/helloworld, printing :data:`PAYLOAD` to its log when it is imported."""
    root = tmp / "hostile-hello"
    shutil.copytree(EXAMPLES / "helloworld", root)
    with (root / "app.py").open("a") as f:
        f.write(f"\nprint({PAYLOAD!r}, flush=True)\n")
    return CodeUnderTest.package(root, tmp / "hostile-hello.pkg")


#: Where the README's screenshots are (written with ``CONFIDE_SCREENSHOTS=1``).
DOCS_SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _shots(tmp: Path) -> Path:
    return DOCS_SCREENSHOTS if os.environ.get("CONFIDE_SCREENSHOTS") == "1" else tmp / "shots"


def _status_badge(browser: Browser) -> str:
    return browser.find("dl.facts .status").text


def test_a_browser_signs_in_follows_a_log_and_stops_an_app(tmp_path: Path) -> None:
    shots = _shots(tmp_path)
    data = tmp_path / "data"
    with operator_running(data) as operator:
        token = create_token(data, "alice")
        with operator.client(token) as api:
            app = deploy(api, _app_printing_a_payload(tmp_path), name="hello-console")
            wait_status(api, app.id, "initializing")
            with chromium(tmp_path / "browser") as browser:
                # Signed out: the console sends the browser to its sign-in page.
                browser.navigate(operator.api_url + "/console/")
                browser.wait_for_text("h1", "Sign in")
                assert browser.url.endswith("/console/sign-in")
                browser.screenshot(shots / "console-sign-in.png")
                browser.find("input[name=token]").send_keys(token)
                browser.find("button[type=submit]").click()

                # The account's apps.
                browser.wait_for_text("h1", "Apps")
                row = browser.wait_for_text("table.apps tbody tr", "hello-console")
                assert app.name in row.text  # its domain
                assert "initializing" in row.text
                browser.screenshot(shots / "console-apps.png")

                # The app's page: its fingerprint as the API states it, its log so far.
                row.find("a.app").click()
                browser.wait_for_text("h1", "hello-console")
                assert browser.find("code.fingerprint").text == app.body["fingerprint"]
                browser.wait_for_text("#log", "waiting for the configuration")
                browser.wait_for_text("#log-state", "Following live")
                assert "serving app:app" not in browser.find("#log").text

                # The owner configures it: new lines appear on the open page, live.
                configure_when_ready(operator.router_port, app, data)
                log = browser.wait_for_text("#log", "serving app:app on https://", START_DEADLINE)
                browser.wait_for_text("#log", PAYLOAD, START_DEADLINE)
                # The payload is text: no element was made of it, no script of it ran.
                assert browser.find_all("#log *") == []
                assert browser.execute("return document.images.length;") == 0
                assert browser.title == "hello-console · Confide console"
                wait_status(api, app.id, "running")
                browser.navigate(browser.url)  # reload: the badge says running now
                browser.wait_for_text("dl.facts .status", "running")
                browser.wait_for_text("#log", "serving app:app on https://")
                browser.execute("window.scrollTo(0, 0);")
                browser.screenshot(shots / "console-app.png")
                del log

                # Stop, through the confirmation step.
                browser.find("a.button[href$='/stop']").click()
                browser.wait_for_text("h1", "Stop hello-console")
                assert api.get(f"/api/v1/apps/{app.id}").json()["desired_state"] == "run"
                browser.screenshot(shots / "console-stop.png")
                browser.find("#confirm").click()
                browser.wait_for_text("h1", "hello-console")
                assert browser.find_all("a.button[href$='/stop']") == []
                wait_status(api, app.id, "stopped")
                # Following ends once the app stopped.
                browser.wait_for_text("#log-state", "no longer running", START_DEADLINE)
                browser.navigate(browser.url)
                assert _status_badge(browser) == "stopped"

                # Projects and plans; the account's tokens.
                browser.find("header nav a[href='/console/projects']").click()
                browser.wait_for_text("h1", "Projects and plans")
                assert "small" in browser.find("table.plans").text
                browser.screenshot(shots / "console-projects.png")
                browser.find("header nav a[href='/console/tokens']").click()
                browser.wait_for_text("h1", "API tokens")
                browser.wait_for_text("table.tokens", "(this session's)")
                browser.screenshot(shots / "console-tokens.png")

                # Signing out ends the session: the console asks to sign in again.
                browser.find("header form.sign-out button").click()
                browser.wait_for_text("h1", "Sign in")
                browser.navigate(operator.api_url + "/console/")
                browser.wait_for_text("h1", "Sign in")
