"""End to end: a real browser (headless Chromium) uses a zero-trust app through ``confide proxy``.

No certificate step: the browser speaks plain HTTP to the proxy on loopback; the
proxy verified the enclave and pins its certificate. Chromium comes from
Debian (``scripts/chromium.sh`` installs it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.browser import dump_dom
from support.proxy import ZeroTrustApp, proxy_running

pytestmark = pytest.mark.slow


def test_chromium_loads_the_app_through_the_proxy(
    zero_trust: ZeroTrustApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    with proxy_running(tmp_path, zero_trust) as proxy:
        dom = dump_dom(proxy.url + "/", tmp_path / "profile")
        assert "Hello world" in dom, dom
        assert "GET / 200" in proxy.stderr


def test_a_rebound_name_gets_nothing_from_the_proxy(
    zero_trust: ZeroTrustApp,  # noqa: F811
    tmp_path: Path,
) -> None:
    """DNS rebinding: the browser resolves the attacker's name to the proxy's address.

    Its page is then same-origin with the proxy's answers for that name; the
    proxy answers 421 (not its name) and the app's page never reaches it.
    """
    with proxy_running(tmp_path, zero_trust) as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
        dom = dump_dom(f"http://evil.example:{port}/", tmp_path / "profile", rules)
        assert "Hello world" not in dom, dom
        assert f"Host evil.example:{port} is not one of" in dom, dom
        assert "GET / 421" in proxy.stderr
        # Guard: the proxy's own name still loads the app in the same browser.
        assert "Hello world" in dump_dom(proxy.url + "/", tmp_path / "profile")
