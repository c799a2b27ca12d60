"""``OperatorClient`` on ``httpx.MockTransport``: requests, parsed models, every error mapping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import confide.client
from confide.attestation import Collateral
from confide.client import OperatorClient
from confide.errors import Error, OperatorError, UsageError
from confide.tee import SimulatedPlatform
from confide.wire import AppStatus, HostPort, TlsMode
from confide.wire.api import DeployManifest
from support.app_doc import (
    APP_ID,
    app_json,
    launch,
)

URL = "https://operator.test"
TOKEN = "cft_secret-token"
NOW = datetime(2030, 1, 1, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, token: str | None = TOKEN, **kwargs: Any) -> OperatorClient:
    return OperatorClient(URL, token, transport=httpx.MockTransport(handler), **kwargs)


def answer(body: Any, status: int = 200) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handler


def recording(body: Any, status: int = 200) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(status, json=body)

    return handler, seen


# -- errors --------------------------------------------------------------------------------


def test_operator_errors_are_ours() -> None:
    # confide.client's __all__: tests/unit/test_exported_members.py
    assert issubclass(OperatorError, Error)


# -- calls and models ------------------------------------------------------------------------


def test_requests_carry_the_token_and_reach_the_api_prefix() -> None:
    handler, seen = recording(
        {"account": "alice", "token_id": 3, "apps": 1, "max_apps": 10, "max_package_size": 99}
    )
    with client(handler) as c:
        account = c.me()
    assert (account.account, account.token_id, account.apps) == ("alice", 3, 1)
    assert (account.max_apps, account.max_package_size) == (10, 99)
    (request,) = seen
    assert str(request.url) == f"{URL}/api/v1/me"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("confide/")
    # Every call has a timeout.
    assert request.extensions["timeout"] == {
        "connect": 30.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }


def test_without_a_token_no_authorization_header_is_sent() -> None:
    handler, seen = recording({"status": "ok"})
    with client(handler, token=None, timeout=5) as c:
        health = c.health()
    assert health.ok and health.status == "ok"
    assert "authorization" not in seen[0].headers
    assert seen[0].extensions["timeout"]["read"] == 5


def test_a_503_health_is_an_answer_not_an_error() -> None:
    with client(answer({"status": "database unreachable"}, 503)) as c:
        health = c.health()
    assert not health.ok and health.status == "database unreachable"


def test_the_token_never_shows_in_repr() -> None:
    c = client(answer({}))
    assert TOKEN not in repr(c) and URL in repr(c)
    c.close()


def test_plans_and_projects() -> None:
    with client(answer([{"name": "small", "memory_mib": 512, "cores": 1}])) as c:
        (plan,) = c.plans()
    assert (plan.name, plan.memory_mib, plan.cores) == ("small", 512, 1)
    body = [{"name": "demo", "created_at": "2030-01-01T00:00:00Z", "apps": 2}]
    with client(answer(body)) as c:
        (project,) = c.projects()
    assert project.name == "demo" and project.apps == 2 and project.created_at == NOW


def test_an_app_is_parsed_into_a_record_with_its_launch_manifest() -> None:
    handler, seen = recording(app_json())
    with client(handler) as c:
        record = c.get_app(str(APP_ID))
    assert str(seen[0].url) == f"{URL}/api/v1/apps/{APP_ID}"
    assert record.id == APP_ID and record.name == "hello" and record.project == "demo"
    assert record.status is AppStatus.RUNNING and record.status.active
    assert record.tls is TlsMode.RATLS
    assert record.router == HostPort("127.0.0.1", 9443)
    assert record.domains == (f"{APP_ID}.confide.test",)
    assert record.launch == launch()
    assert record.fingerprint == launch().measurement() == record.operator_fingerprint
    assert record.fingerprint_agrees
    assert record.expires_at == datetime(2030, 3, 1, tzinfo=UTC)
    assert record.package_size == 1234 and record.package_sha256 == bytes(32)
    assert record.to_dict()["fingerprint"] == record.fingerprint.hex()
    json.dumps(record.to_dict())  # JSON-ready


def test_the_fingerprint_is_recomputed_not_taken_from_the_operator() -> None:
    with client(answer(app_json(fingerprint="ab" * 32))) as c:
        record = c.get_app(APP_ID)
    assert record.fingerprint == launch().measurement()
    assert record.operator_fingerprint == bytes.fromhex("ab" * 32)
    assert not record.fingerprint_agrees


def test_list_stop_delete_and_metrics() -> None:
    other = uuid.uuid4()
    handler, seen = recording({"apps": [app_json(), app_json(other, status="stopped")]})
    with client(handler) as c:
        records = c.list_apps(project="demo")
    assert [r.id for r in records] == [APP_ID, other]
    assert records[1].status is AppStatus.STOPPED and not records[1].status.active
    assert seen[0].url.params["project"] == "demo"

    handler, seen = recording(app_json(desired_state="stop"), 202)
    with client(handler) as c:
        assert c.stop_app(APP_ID).desired_state == "stop"
        assert c.delete_app(APP_ID).id == APP_ID
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", f"/api/v1/apps/{APP_ID}/stop"),
        ("DELETE", f"/api/v1/apps/{APP_ID}"),
    ]

    body = {
        "app_id": str(APP_ID),
        "status": "running",
        "restarts": 1,
        "uptime_seconds": 12.5,
        "status_seconds": {"spawning": 1, "running": 12.5},
        "runtime": {},
    }
    with client(answer(body)) as c:
        metrics = c.metrics(APP_ID)
    assert metrics.restarts == 1 and metrics.uptime_seconds == 12.5
    assert metrics.status_seconds == {"spawning": 1.0, "running": 12.5}


def test_an_app_id_that_is_not_a_uuid_never_reaches_the_url() -> None:
    with client(answer({})) as c, pytest.raises(UsageError, match="UUID"):
        c.get_app("../me")


def test_create_app_streams_the_package_and_sends_the_manifest(tmp_path: Path) -> None:
    package = tmp_path / "app.pkg"
    package.write_bytes(b"p" * 200_000)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=app_json(status="spawning"))

    progress: list[tuple[int, int]] = []
    manifest = DeployManifest(
        name="hello",
        application="app:app",
        plan="small",
        expires_at=NOW + timedelta(days=30),
        tls=TlsMode.RATLS,
        project="demo",
    )
    with client(handler) as c:
        record = c.create_app(package, manifest, progress=lambda a, b: progress.append((a, b)))
    assert record.status is AppStatus.SPAWNING
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/api/v1/apps"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    # A known length (no chunked encoding), read from disk in pieces as it is sent.
    assert int(request.headers["content-length"]) == len(request.content) > 200_000
    assert b"p" * 200_000 in request.content
    assert len(progress) > 3 and progress[-1] == (200_000, 200_000)
    assert [a for a, _ in progress] == sorted(a for a, _ in progress)


def test_create_app_sends_fields_the_operator_parses(tmp_path: Path) -> None:
    package = tmp_path / "app.pkg"
    package.write_bytes(b"package bytes")
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(201, json=app_json())

    manifest = DeployManifest(
        name="hello",
        application="app:app",
        plan="small",
        expires_at=NOW,
        tls=TlsMode.OWNER,
        domain="app.example.com",
        certificate="-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
    )
    with client(handler) as c:
        c.create_app(package, manifest)
    body = bodies[0]
    assert b'name="package"; filename="app.pkg"' in body and b"package bytes" in body
    assert b'name="manifest"' in body
    doc = json.loads(manifest.to_json())
    assert doc == {
        "name": "hello",
        "project": "default",
        "application": "app:app",
        "healthcheck": "/",
        "plan": "small",
        "expires_at": "2030-01-01T00:00:00+00:00",
        "tls": "owner",
        "domain": "app.example.com",
        "certificate": manifest.certificate,
    }


def test_create_app_with_a_missing_package_is_a_usage_error(tmp_path: Path) -> None:
    manifest = DeployManifest(
        name="x", application="app:app", plan="small", expires_at=NOW, tls=TlsMode.RATLS
    )
    with client(answer({})) as c, pytest.raises(UsageError, match="cannot read the package"):
        c.create_app(tmp_path / "missing.pkg", manifest)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"certificate": "-----BEGIN PRIVATE KEY-----", "domain": "a.b", "tls": TlsMode.OWNER},
         "private key"),
        ({"tls": TlsMode.OWNER}, "exactly when tls is owner"),
        ({"domain": "a.example"}, "exactly when tls is owner"),
        ({"expires_at": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)  # fmt: skip
def test_deploy_manifest_refusals(changes: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "name": "x",
        "application": "app:app",
        "plan": "small",
        "expires_at": NOW,
        "tls": TlsMode.RATLS,
    }
    with pytest.raises(UsageError, match=message):
        DeployManifest(**{**base, **changes})


def test_logs_and_tail() -> None:
    handler, seen = recording(None)

    def logs(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="one\ntwo\n")

    with client(logs) as c:
        assert c.logs(APP_ID) == "one\ntwo\n"
        assert c.logs(APP_ID, tail=1) == "one\ntwo\n"
        with pytest.raises(UsageError):
            c.logs(APP_ID, tail=-1)
    assert "tail" not in seen[0].url.params and seen[1].url.params["tail"] == "1"


def test_follow_logs_yields_lines_as_they_come_with_no_read_timeout() -> None:
    seen: list[httpx.Request] = []

    def stream() -> Iterator[bytes]:
        yield b"one\ntw"
        yield b"o\r\nthree"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=stream())

    with client(handler) as c:
        assert list(c.follow_logs(APP_ID, tail=5)) == ["one", "two", "three"]
    params = seen[0].url.params
    assert params["follow"] == "true" and params["tail"] == "5"
    timeout = seen[0].extensions["timeout"]
    assert timeout["read"] is None and timeout["connect"] == 30.0


def _certificate_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_ca_certificate() -> None:
    pem = _certificate_pem()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pem, headers={"content-type": "application/x-pem-file"})

    with client(handler, token=None) as c:
        cert = c.ca_certificate()
    assert cert.public_bytes(serialization.Encoding.PEM) == pem
    with client(lambda r: httpx.Response(200, content=b"nope")) as c:
        with pytest.raises(OperatorError, match="not a PEM certificate") as err:
            c.ca_certificate()
    assert err.value.code == "operator.response"


def test_simulation_none_for_a_real_tee() -> None:
    with client(answer({"simulated": False}), token=None) as c:
        assert c.simulation() is None


def test_simulation_gives_the_root_and_parsed_collateral(tmp_path: Path) -> None:
    platform = SimulatedPlatform.open(tmp_path / "sim", now=NOW)
    root = platform.root_certificate.public_bytes(serialization.Encoding.PEM).decode()
    collateral_json = platform.collateral(NOW).to_json()  # ECDSA: a new signature each time
    collateral = json.loads(collateral_json)
    body = {"simulated": True, "root_ca_pem": root, "collateral": collateral}
    with client(answer(body), token=None) as c:
        info = c.simulation()
    assert info is not None
    assert info.root_ca == platform.root_certificate
    assert isinstance(info.collateral, Collateral)
    assert info.collateral.to_json() == collateral_json
    with client(answer({"simulated": True, "root_ca_pem": root}), token=None) as c:
        partial = c.simulation()
    assert partial is not None and partial.collateral is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"simulated": True}, "publishes no root_ca_pem"),
        ({"simulated": True, "root_ca_pem": "nope"}, "not a PEM certificate"),
        ({"simulated": "yes"}, "simulated is not true or false"),
    ],
)
def test_simulation_answers_that_are_refused(body: dict[str, Any], problem: str) -> None:
    with client(answer(body), token=None) as c, pytest.raises(OperatorError, match=problem):
        c.simulation()


# -- errors ----------------------------------------------------------------------------------

ERRORS = [
    # (status, body, app route?, code, words in the message)
    (401, {"detail": "invalid token"}, False, "operator.unauthorized", "confide login"),
    (401, {"detail": "invalid token"}, True, "operator.unauthorized", "did not accept the token"),
    (404, {"detail": f"no app {APP_ID}"}, True, "operator.not_found",
     f"no app {APP_ID} on this operator (or not yours)"),
    (404, {"detail": "this operator has no CA"}, False, "operator.http",
     "HTTP 404: this operator has no CA"),
    (409, {"detail": "this account already has 2 apps"}, False, "operator.conflict",
     "already has 2 apps"),
    (413, {"detail": "the package is larger than this operator's limit of 65536 bytes"}, False,
     "operator.too_large", "its limit is 65536 bytes"),
    (413, {"detail": "too big"}, False, "operator.too_large",
     "too large for this operator: too big"),
    (422, {"detail": [{"loc": ["body", "manifest", "plan"], "msg": "no plan 'x'"},
                      {"loc": ["body", "manifest", "expires_at"], "msg": "in the past"}]},
     False, "operator.invalid", "manifest.plan: no plan 'x'; manifest.expires_at: in the past"),
    (422, {"detail": [{"loc": ["query", "tail"], "msg": "too large"}]}, True,
     "operator.invalid", "tail: too large"),
    (500, "Internal Server Error", False, "operator.http", "HTTP 500"),
    (503, {"detail": "down"}, True, "operator.http", "HTTP 503: down"),
    (302, None, False, "operator.http", "HTTP 302"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "app_route", "code", "words"), ERRORS)
def test_error_mapping(status: int, body: Any, app_route: bool, code: str, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        if body is None:
            return httpx.Response(status, headers={"location": "https://elsewhere.test/"})
        return httpx.Response(status, json=body)

    with client(handler) as c, pytest.raises(OperatorError) as err:
        if app_route:
            c.get_app(APP_ID)
        else:
            c.me()
    assert err.value.code == code
    assert err.value.status == status and err.value.url == URL
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    if code == "operator.too_large" and "65536" in words:
        assert err.value.limit == 65536


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "Connection refused"),
        (httpx.ConnectTimeout("timed out"), "no answer within 30 s"),
        (httpx.ReadTimeout("timed out"), "no answer within 30 s"),
        (httpx.RemoteProtocolError("peer closed"), "peer closed"),
    ],
)
def test_transport_errors_name_the_url(exc: httpx.TransportError, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with client(handler) as c, pytest.raises(OperatorError) as err:
        c.list_apps()
    assert err.value.code == "operator.unreachable" and err.value.status is None
    assert str(err.value).startswith(f"cannot reach the operator at {URL}: {words}")


MALFORMED = [
    (b"not json", "not JSON"),
    (json.dumps([]).encode(), "the answer is not a JSON object"),
    (json.dumps(app_json(status="exploded")).encode(), "status is not one of"),
    (json.dumps(app_json(router="nowhere")).encode(), "router"),
    (json.dumps(app_json(fingerprint="abc")).encode(), "fingerprint is not hex"),
    (json.dumps(app_json(expires_at="2030-01-01T00:00:00")).encode(), "time zone"),
    (json.dumps(app_json(launch={"format": "x"})).encode(), "launch: not a Confide launch"),
    (json.dumps(app_json(launch=launch(uuid.uuid4()).to_dict())).encode(), "not of app"),
    (json.dumps({k: v for k, v in app_json().items() if k != "domains"}).encode(),
     "domains is missing"),
    (json.dumps(app_json(package={"sha256": "00", "size": 1})).encode(),
     "package.sha256 is not 32 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "problem"), MALFORMED)
def test_malformed_answers_are_refused(body: bytes, problem: str) -> None:
    with client(lambda r: httpx.Response(200, content=body)) as c:
        with pytest.raises(OperatorError) as err:
            c.get_app(APP_ID)
    assert err.value.code == "operator.response"
    assert problem in str(err.value)
    assert f"GET /apps/{APP_ID}" in str(err.value)


def test_an_answer_too_large_is_refused() -> None:
    big = b"x" * (confide.client.MAX_RESPONSE_BYTES + 1)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    with client(lambda r: httpx.Response(200, content=chunks())) as c:
        with pytest.raises(OperatorError, match="longer than"):
            c.logs(APP_ID)


@pytest.mark.parametrize(
    "url",
    ["ftp://operator.test", "operator.test", "https://", "https://a:b@operator.test",
     "https://operator.test/?q=1", "https://operator.test:99999"],
)  # fmt: skip
def test_bad_base_urls(url: str) -> None:
    with pytest.raises(UsageError, match="operator URL"):
        OperatorClient(url, None)


def test_base_url_keeps_a_path_prefix() -> None:
    handler, seen = recording({"status": "ok"})
    c = OperatorClient(
        "https://operator.test/confide/", None, transport=httpx.MockTransport(handler)
    )
    with c:
        c.health()
    assert c.base_url == "https://operator.test/confide"
    assert str(seen[0].url) == "https://operator.test/confide/api/v1/health"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(sorted(app_json())),
    value=JSON,
)
def test_any_answer_parses_or_raises_our_error(field: str, value: object) -> None:
    """A record with one field replaced by anything: an AppRecord, or an OperatorError."""
    body = app_json()
    body[field] = value
    with client(answer(body)) as c:
        try:
            record = c.get_app(APP_ID)
        except OperatorError as exc:
            assert exc.code == "operator.response"
        else:
            assert record.id == APP_ID


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_any_json_answer_to_every_call_parses_or_raises_our_error(value: object) -> None:
    with client(answer(value)) as c:
        for call in (c.me, c.plans, c.projects, c.list_apps, c.simulation, c.health):
            try:
                call()
            except OperatorError as exc:
                assert exc.code == "operator.response"


def test_an_upload_cut_off_hints_at_the_size_limit(tmp_path: Path) -> None:
    package = tmp_path / "app.pkg"
    package.write_bytes(b"p" * 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    manifest = DeployManifest(
        name="x", application="app:app", plan="small", expires_at=NOW, tls=TlsMode.RATLS
    )
    with client(handler) as c, pytest.raises(OperatorError) as err:
        c.create_app(package, manifest)
    assert err.value.code == "operator.unreachable"
    assert "package's 1000 bytes" in str(err.value) and "max_package_size" in str(err.value)
