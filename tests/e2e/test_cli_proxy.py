"""End to end: ``confide proxy`` in front of a zero-trust app deployed on a real operator.

The proxy verifies the enclave's RA-TLS certificate through the router (SNI the
app's domain; the simulated TEE's root and collateral from the operator's
``/api/v1/simulation``), then serves plain HTTP on loopback. A TCP relay under
the test's control sits between the proxy and the router, so the test can put
an impostor TLS server in the enclave's place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from support.operators import (
    runtime_pids,
    wait_gone,
    wait_status,
)
from support.proxy import (
    Impostor,
    ProxyProcess,
    Relay,
    ZeroTrustApp,
    proxy_running,
)
from support.runtimes import (
    CONFIDE,
    DEADLINE,
    poll,
)

pytestmark = pytest.mark.slow


def test_proxy_serves_the_verified_enclave(zero_trust: ZeroTrustApp, tmp_path: Path) -> None:
    with (
        proxy_running(tmp_path, zero_trust) as proxy,
        httpx.Client(base_url=proxy.url) as browser,
    ):
        response = browser.get("/")
        assert response.status_code == 200 and response.text == "Hello world"
        # Keep-alive on both sides, and a request body streamed upstream.
        assert browser.get("/health").status_code == 200
        assert browser.post("/", content=b"x" * 100_000).status_code < 500


def test_only_the_proxys_own_name_and_origin_reach_the_enclave(
    zero_trust: ZeroTrustApp, tmp_path: Path
) -> None:
    """DNS rebinding (another Host) gets 421, another site's POST 403: nothing forwarded."""
    with (
        proxy_running(tmp_path, zero_trust) as proxy,
        httpx.Client(base_url=proxy.url, timeout=DEADLINE) as browser,
    ):
        port = proxy.url.rsplit(":", 1)[1]
        rebound = browser.get("/", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 421 and "Hello world" not in rebound.text
        cross = browser.post(
            "/", headers={"Origin": "https://evil.example"}, content=b"transfer=all"
        )
        assert cross.status_code == 403 and "cross-origin request refused" in cross.text
        own = browser.post("/", headers={"Origin": proxy.url}, content=b"x")
        assert own.status_code < 500
        assert "GET / 421" in proxy.stderr and "POST / 403" in proxy.stderr


def test_wrong_fingerprint_refuses_to_start(zero_trust: ZeroTrustApp, tmp_path: Path) -> None:
    wrong = "00" * 32
    proxy = ProxyProcess(tmp_path, zero_trust, "--fingerprint", wrong)
    assert proxy.proc.wait(DEADLINE) == 1, proxy.stderr
    lines = [line for line in proxy.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert wrong in lines[0] and zero_trust.fingerprint in lines[0]
    assert not proxy.ready.exists()


def test_non_loopback_listen_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CONFIDE), "proxy", "app.example", "--listen", "0.0.0.0:0"]
        + ["--fingerprint", "00" * 32, "--collateral", str(tmp_path / "none.json")],
        capture_output=True,
        timeout=DEADLINE,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "not a loopback address" in done.stderr and "--unsafe-listen-any" in done.stderr


def test_a_new_certificate_is_verified_again(zero_trust: ZeroTrustApp, tmp_path: Path) -> None:
    relay = Relay(zero_trust.operator.router_port)
    impostor = Impostor(tmp_path)
    proxy = ProxyProcess(tmp_path, zero_trust, connect=relay.port)
    try:
        url = proxy.wait_url()
        with httpx.Client(base_url=url, timeout=DEADLINE) as browser:
            assert browser.get("/").text == "Hello world"

            # Someone else answers in the enclave's place: verified, refused, and nothing sent.
            relay.switch(impostor.port)
            for _ in range(2):
                refused = browser.get("/")
                assert refused.status_code == 502
                assert "not trusted" in refused.text and "RA-TLS" in refused.text
                assert len(refused.text.strip().splitlines()) == 1
            assert impostor.served == 0
            assert proxy.stderr.count("verifying it again") == 1  # then refused at once

            # The enclave is back: its pinned certificate is used again.
            relay.switch(zero_trust.operator.router_port)
            assert browser.get("/").text == "Hello world"
            assert "GET / 502" in proxy.stderr and "GET / 200" in proxy.stderr
        assert proxy.stop() == 0, proxy.stderr
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait(DEADLINE)
        relay.close()
        impostor.close()


def test_a_restarted_enclave_is_verified_again(zero_trust: ZeroTrustApp, tmp_path: Path) -> None:
    """The runtime is killed; restarted from its sealed state, it presents a new certificate.

    Last in this module: the app's enclave is not the same process afterwards.
    """
    with (
        proxy_running(tmp_path, zero_trust) as proxy,
        httpx.Client(base_url=proxy.url, timeout=DEADLINE) as browser,
    ):
        assert browser.get("/").text == "Hello world"
        pids = runtime_pids(zero_trust.data_dir)
        assert len(pids) == 1
        os.killpg(pids[0], signal.SIGKILL)
        wait_gone(pids)
        wait_status(zero_trust.api, uuid.UUID(zero_trust.app_id), "running")
        # "running" may come a moment before the router reaches the new runtime: until then
        # the proxy answers 502 and must recover by itself.
        answers: list[httpx.Response] = []

        def answered() -> bool:
            answers.append(browser.get("/"))
            return answers[-1].status_code != 502

        poll(answered, "the proxy to reach the restarted enclave")
        response = answers[-1]
        assert response.status_code == 200 and response.text == "Hello world", response.text
        log = proxy.stderr
        assert "the enclave presents a new certificate: verifying it again" in log
        assert "the enclave's new certificate verified: pinned it" in log
