"""End to end: what the operator can read, by TLS mode, seen by the router's recorder.

The operator runs in this process (:func:`confide.operator.run_operator` on an
event loop of its own thread, SQLite, port 0) so that a recorder sees every
byte its router relays; the runtimes are real subprocesses, as in production.

- RA-TLS: the router passes TLS through; neither the configuration (the code
  key) nor a request nor an answer shows in what it relays.
- Operator mode (``--untrusted-ssl``): the configuration still passes through
  (the owner verifies the enclave first), then the router terminates TLS with
  the operator CA's certificate, which the client trusts from ``/api/v1/ca``,
  and reads the plain HTTP: that is what this mode means.
- Owner mode: the owner's domain routes (passthrough) to the enclave.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from confide.attestation import fetch_peer_certificate
from confide.operator import (
    App,
    Database,
)
from confide.operator._router import Direction
from support.inprocess import (
    InProcessOperator,
    operator_in_thread,
)
from support.operators import (
    Deployed,
    configure,
    configure_when_ready,
    deploy,
    package,
    router_client,
    verify_through_router,
    wait_status,
)
from support.runtimes import (
    OwnerPki,
    trusting,
)

pytestmark = pytest.mark.slow

MARKER = "plaintext-marker-5c1e9a"


@pytest.fixture(scope="module", name="operator")
def operator_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessOperator]:
    with operator_in_thread(tmp_path_factory.mktemp("modes") / "data") as operator:
        yield operator


def _request(client: httpx.Client) -> httpx.Response:
    return client.get(f"/?q={MARKER}", headers={"X-Marker": MARKER})


def test_ratls_passthrough_hides_everything_operator_mode_does_not(
    operator: InProcessOperator, tmp_path: Path
) -> None:
    with operator.client() as api:
        ratls = deploy(api, package(tmp_path), name="zero-trust")
        untrusted = deploy(api, package(tmp_path), name="untrusted", tls="operator")
        assert untrusted.manifest.tls.launch == "none"
        wait_status(api, ratls.id, "initializing")
        wait_status(api, untrusted.id, "initializing")
        ca_pem = api.get("/api/v1/ca").text

        # Both configurations go through the router unterminated: the code keys never show.
        operator.recording.clear()
        cert = configure_when_ready(operator.router_port, ratls, operator.data_dir)
        configure_when_ready(operator.router_port, untrusted, operator.data_dir)
        relayed = operator.recording.seen()
        assert relayed, "the router relayed nothing"
        for app in (ratls, untrusted):
            assert app.code.key is not None
            assert app.code.key.hex().encode() not in relayed
            assert str(app.id).encode() in relayed  # the SNI, in the clear ClientHello
        wait_status(api, ratls.id, "running")
        wait_status(api, untrusted.id, "running")

    # RA-TLS: requests and answers cross as ciphertext only.
    operator.recording.clear()
    with router_client(operator.router_port, ratls.name, trusting(cert)) as user:
        response = _request(user)
        assert response.status_code == 200 and response.text == "Hello world"
    relayed = operator.recording.seen()
    assert relayed
    assert MARKER.encode() not in relayed
    assert b"Hello world" not in relayed
    # The local runtime took the connection itself (ADR 0009): the router peeked at the
    # ClientHello and nothing of the enclave's answers crossed it.
    assert operator.recording.seen(Direction.TO_CLIENT) == b""
    assert relayed.startswith(b"\x16") and ratls.name.encode() in relayed

    # Operator mode: the router terminates TLS with the operator CA's certificate...
    context = ssl.create_default_context(cadata=ca_pem)
    operator.recording.clear()
    with router_client(operator.router_port, untrusted.name, context) as user:
        response = _request(user)
        assert response.status_code == 200 and response.text == "Hello world"
        peer = user.get("/health")
        assert peer.json()["status"] == "ok"
    # ...and reads the plaintext: that is what trusting the operator means.
    assert MARKER.encode() in operator.recording.seen(Direction.TO_UPSTREAM)
    assert b"Hello world" in operator.recording.seen(Direction.TO_CLIENT)

    # A client that trusts only the RA-TLS enclave cannot be served by the operator's CA.
    with pytest.raises(httpx.ConnectError):
        with router_client(operator.router_port, untrusted.name, trusting(cert)) as user:
            user.get("/")


def _deploy_owned(api: httpx.Client, tmp_path: Path) -> tuple[Deployed, str, OwnerPki]:
    domain = f"app-{uuid.uuid4().hex[:8]}.owner.example"
    pki = OwnerPki.generate((domain,))
    app = deploy(
        api,
        package(tmp_path),
        name="owned",
        tls="owner",
        domain=domain,
        certificate=pki.certificate.public_bytes(Encoding.PEM).decode(),
    )
    assert app.body["domains"] == [app.name, domain]
    return app, domain, pki


def test_owner_domain_routes_to_the_enclave(operator: InProcessOperator, tmp_path: Path) -> None:
    with operator.client() as api:
        app, domain, _ = _deploy_owned(api, tmp_path)
        wait_status(api, app.id, "initializing")
        fingerprint = bytes.fromhex(app.body["fingerprint"])
        # The configuration endpoint answers under both names, through the router.
        by_id, _ = verify_through_router(operator.router_port, app, operator.data_dir, fingerprint)
        by_domain = fetch_peer_certificate(
            "127.0.0.1", operator.router_port, server_name=domain, timeout=10
        )
        assert by_domain == by_id
        db = Database.open(operator.settings.database_url)
        try:
            with db.session() as session:
                stored = session.scalar(select(App.certificate_pem).where(App.id == app.id))
        finally:
            db.dispose()
        assert stored is not None
        written = operator.data_dir / "apps" / str(app.id) / "certificate.pem"
        assert written.read_text() == stored
        assert api.post(f"/api/v1/apps/{app.id}/stop").status_code == 202
        wait_status(api, app.id, "stopped")


def test_owner_mode_serves_with_the_owners_certificate(
    operator: InProcessOperator, tmp_path: Path
) -> None:
    with operator.client() as api:
        app, domain, pki = _deploy_owned(api, tmp_path)
        try:
            wait_status(api, app.id, "initializing")
            fingerprint = bytes.fromhex(app.body["fingerprint"])
            cert, _ = verify_through_router(
                operator.router_port, app, operator.data_dir, fingerprint
            )
            response = configure(
                operator.router_port, app, cert, name=domain, ssl_private_key=pki.key_pem
            )
            assert response.status_code == 200, response.text
            wait_status(api, app.id, "running")
            with router_client(operator.router_port, domain, trusting(pki.ca)) as user:
                assert user.get("/").text == "Hello world"
        finally:
            api.post(f"/api/v1/apps/{app.id}/stop")
