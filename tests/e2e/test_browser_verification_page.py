"""End to end: what the user sees in a real browser (headless Chromium) through ``confide proxy``.

- The verification page at ``/.well-known/confide/`` shows what the proxy verified.
- A request the proxy refuses (an impostor answers in the enclave's place) shows
  the verifier's code and reason on that page, with a 502, not a bare 502; a
  script still gets the one line.
- An owner whose release labels carry markup: the page shows them as text.

``CONFIDE_SCREENSHOTS=1`` writes the screenshots into ``docs/screenshots/`` (the README's).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from confide.cli import app as cli_app
from confide.client import JSON_PATH, PAGE_PATH, AppContext
from confide.release import OwnerKey
from support.browser import dump_dom, save_screenshot
from support.operators import create_token
from support.proxy import Impostor, ProxyProcess, Relay, ZeroTrustApp, proxy_running
from support.runtimes import DEADLINE, EXAMPLES, HOST

pytestmark = pytest.mark.slow

#: Release labels an owner controls, each an attempt to run a script in the page.
SCRIPT = "<script>document.title='pwned'</script>"
IMAGE = '"><img src=x onerror="document.title=\'pwned\'">'


def test_the_verification_page_shows_what_was_verified(
    zero_trust: ZeroTrustApp, tmp_path: Path
) -> None:
    with (
        proxy_running(tmp_path, zero_trust) as proxy,
        httpx.Client(base_url=proxy.url, timeout=DEADLINE) as script,
    ):
        dom = dump_dom(proxy.url + PAGE_PATH, tmp_path / "profile")
        verdict = f"Verified: a SIMULATED SGX enclave runs the expected code for {zero_trust.name}"
        assert verdict in dom, dom
        for shown in (zero_trust.fingerprint, "UpToDate", "fresh challenge", "answered at"):
            assert shown in dom, shown
        assert "not proof by itself" in dom and "Hello world" not in dom
        # The same values for scripts, from the same document.
        document = script.get(JSON_PATH).json()
        assert document["status"] == "verified"
        assert document["enclave"]["quote"]["mrenclave"] == zero_trust.fingerprint
        assert zero_trust.name in document["enclave"]["launch"]["san"]
        # Served by the proxy (nothing forwarded), under the strict policy.
        page = script.get(PAGE_PATH)
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["x-frame-options"] == "DENY"
        assert f"GET {PAGE_PATH} 200" in proxy.stderr
        save_screenshot(proxy.url + PAGE_PATH, tmp_path / "profile", "verification-page", tmp_path)


def test_a_refused_request_shows_the_reason_in_the_browser(
    zero_trust: ZeroTrustApp, tmp_path: Path
) -> None:
    relay = Relay(zero_trust.operator.router_port)
    impostor = Impostor(tmp_path)
    proxy = ProxyProcess(tmp_path, zero_trust, connect=relay.port)
    try:
        url = proxy.wait_url()
        relay.switch(impostor.port)
        dom = dump_dom(url + "/", tmp_path / "profile")
        assert "Not verified: nothing was sent to" in dom, dom
        assert "not trusted" in dom and "Hello world" not in dom
        with httpx.Client(base_url=url, timeout=DEADLINE) as client:
            page = client.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 502
            code = page.text.split("error code</th><td>", 1)[1].split("<", 1)[0]
            assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", code), code
            line = client.get("/", headers={"Accept": "*/*"})
            assert line.status_code == 502 and line.headers["content-type"].startswith("text/plain")
            assert len(line.text.strip().splitlines()) == 1 and "not trusted" in line.text
            # The pinned verification still holds: the page says so, and names the refusal.
            document = client.get(JSON_PATH).json()
            assert document["status"] == "verified" and document["error"]["code"] == code
        assert impostor.served == 0
        save_screenshot(url + "/", tmp_path / "profile", "refused-request", tmp_path)
        assert proxy.stop() == 0, proxy.stderr
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait(DEADLINE)
        relay.close()
        impostor.close()


def _project(folder: Path) -> Path:
    (folder / "tests").mkdir(parents=True)
    project = folder / "confide.toml"
    project.write_text(
        'name = "hello"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\n'
        f"code = {json.dumps(str(EXAMPLES / 'helloworld'))}\n"
        'tests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    return project


def test_an_owners_hostile_release_labels_render_inert(
    zero_trust: ZeroTrustApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner signs a release whose version and source carry markup; the user proxies it
    with the owner's key. Chromium shows the labels as text: no script, no image element."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user-state"))  # the proxy's too
    operator = zero_trust.operator
    project = _project(tmp_path / "project")
    deployed = CliRunner().invoke(
        cli_app,
        [
            "deploy",
            "--path",
            str(project),
            "--connect",
            f"{HOST}:{operator.router_port}",
            "--url",
            operator.api_url,
            "--token",
            create_token(operator.data_dir, "hostile-owner"),
            "--allow-simulation",
            "--key-file",
            str(tmp_path / "owner.key"),
            "--release-version",
            SCRIPT,
            "--source-ref",
            IMAGE,
            "--json",
        ],
    )
    assert deployed.exit_code == 0, deployed.output
    owner = OwnerKey.from_file_bytes((tmp_path / "owner.key").read_bytes()).public_key.to_text()
    context = AppContext.load(next((project.parent / ".confide").glob("*.json")))
    app = ZeroTrustApp(
        operator,
        zero_trust.api,
        zero_trust.data_dir,
        context.domains[0],
        str(context.app_id),
        context.fingerprint.hex(),
    )
    with proxy_running(tmp_path, app, "--owner", owner) as proxy:
        dom = dump_dom(proxy.url + PAGE_PATH, tmp_path / "profile")
        assert "Verified: a SIMULATED SGX enclave" in dom, dom
        # Shown as text (escaped in the serialised DOM), never as elements.
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom, dom
        assert "&lt;img src=x onerror=" in dom, dom
        assert "<script" not in dom.lower() and "<img" not in dom.lower(), dom
        assert "<title>pwned</title>" not in dom
