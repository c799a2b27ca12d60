"""End to end: every bad configuration is refused with its status and says why; nothing sticks.

One runtime takes the whole table (it keeps waiting after each refusal, as the
owner may retry), then a valid configuration; the sealed state is read back
with the simulated platform's sealing key to prove that nothing was configured
before that. A second runtime is configured while idle and half-open
connections are held open.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from confide.crypto import PackageKey, X25519KeyPair, seal
from confide.runtime import (
    SealedState,
    StateStore,
)
from confide.tee import SimulatedPlatform
from confide.wire import MAX_CONFIGURATION_SIZE, TlsMode
from support.runtimes import (
    DEADLINE,
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    OwnerPki,
    RuntimeProcess,
    assert_nowhere,
    client,
    new_platform,
    running,
    sealed_secrets,
    secret_fragments,
    trusting,
    verify_enclave,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Enclave:
    """A waiting runtime and what the owner knows about it."""

    runtime: RuntimeProcess
    launch: Launch
    platform: SimulatedPlatform
    port: int
    pinned: ssl.SSLContext
    enclave_key: bytes
    code_key: PackageKey

    def state(self) -> SealedState | None:
        key = self.platform.sealing_key(self.launch.measurement())
        return StateStore(self.launch.state_dir, sealing_key=key).load()


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enclave]:
    tmp = tmp_path_factory.mktemp("rejects")
    platform = new_platform(tmp / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp / "app.pkg")
    assert code.key is not None
    launch = Launch(code, tmp / "state", tmp / "sim")
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, verified = verify_enclave(port, platform, launch.measurement())
        yield Enclave(runtime, launch, platform, port, trusting(cert), verified.extra, code.key)


Body = dict[str, Any] | bytes
Case = Callable[[Enclave], Body]


def _ok(e: Enclave, **fields: Any) -> dict[str, Any]:
    return {"uuid": str(e.launch.app_id), "code_secret_key": e.code_key.hex(), **fields}


def _without(e: Enclave, name: str) -> dict[str, Any]:
    body = _ok(e)
    del body[name]
    return body


OTHER_KEY = X25519KeyPair.generate().public_key

#: id -> (request body, expected status, fragment of the message)
CASES: dict[str, tuple[Case, int, str]] = {
    "not json": (lambda e: b"{not json", 400, "not valid JSON"),
    "not utf-8": (lambda e: b'{"uuid": "\xff"}', 400, "not UTF-8"),
    "json array": (lambda e: b"[]", 400, "must be a JSON object"),
    "nested too deeply": (lambda e: b"[" * 200_000, 400, "nested too deeply"),
    "missing uuid": (lambda e: _without(e, "uuid"), 401, "uuid"),
    "wrong uuid": (lambda e: _ok(e, uuid=str(uuid.uuid4())), 401, "wrong uuid"),
    "uuid not a string": (lambda e: _ok(e, uuid=7), 401, "wrong uuid"),
    "uuid checked first": (
        lambda e: {"uuid": "nope", "code_secret_key": "zz", "app_sealed_secrets": "!"},
        401,
        "wrong uuid",
    ),
    "duplicate field": (
        lambda e: (
            f'{{"uuid": "{e.launch.app_id}", "uuid": "{e.launch.app_id}", '
            f'"code_secret_key": "{e.code_key.hex()}"}}'
        ).encode(),
        400,
        "duplicate key",
    ),
    "unknown field": (lambda e: _ok(e, debug=True), 400, "unknown field(s) debug"),
    "code key missing": (
        lambda e: _without(e, "code_secret_key"),
        400,
        "code_secret_key is missing",
    ),
    "code key too short": (lambda e: _ok(e, code_secret_key="00" * 16), 400, "64 hex digits"),
    "code key not hex": (lambda e: _ok(e, code_secret_key="zz" * 32), 400, "64 hex digits"),
    "code key wrong": (
        lambda e: _ok(e, code_secret_key=PackageKey.generate().hex()),
        400,
        "package does not open with code_secret_key",
    ),
    "app_secrets not an object": (lambda e: _ok(e, app_secrets=[1]), 400, "app_secrets must be"),
    "sealed secrets not base64url": (
        lambda e: _ok(e, app_sealed_secrets="a+b/"),
        400,
        "not base64url",
    ),
    "sealed secrets for another key": (
        lambda e: _ok(e, app_sealed_secrets=sealed_secrets({"a": 1}, OTHER_KEY)),
        400,
        "does not open with this enclave's key",
    ),
    "sealed secrets truncated": (
        lambda e: _ok(e, app_sealed_secrets="AAAA"),
        400,
        "does not open with this enclave's key",
    ),
    "sealed plaintext not an object": (
        lambda e: _ok(
            e,
            app_sealed_secrets=_b64(seal(b"[1, 2]", e.enclave_key)),
        ),
        400,
        "plaintext of app_sealed_secrets must be a JSON object",
    ),
    "two different code keys": (
        lambda e: _ok(
            e,
            app_sealed_secrets=sealed_secrets(
                {"code_secret_key": PackageKey.generate().hex()}, e.enclave_key
            ),
        ),
        400,
        "differ",
    ),
    "ssl key outside certificate mode": (
        lambda e: _ok(e, ssl_private_key="-----BEGIN PRIVATE KEY-----"),
        400,
        "only accepted by a runtime launched with --certificate",
    ),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _post(e: Enclave, body: Body) -> httpx.Response:
    with client(e.port, e.pinned) as owner:
        if isinstance(body, bytes):
            return owner.post("/", content=body, headers={"content-type": "application/json"})
        return owner.post("/", json=body)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_configuration_is_refused(enclave: Enclave, name: str) -> None:
    build, status, fragment = CASES[name]
    response = _post(enclave, build(enclave))
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]
    assert response.headers["Confide-Status"] == "waiting"
    # Nothing decrypted, nothing configured: the endpoint keeps waiting.
    assert not (enclave.launch.code_dir() / "app").exists()
    state = enclave.state()
    assert state is not None and not state.configured
    with client(enclave.port, enclave.pinned) as owner:
        assert owner.get("/").headers["Mse-Status"] == "Waiting"


def test_body_over_the_limit_by_content_length(enclave: Enclave) -> None:
    response = _post(enclave, b" " * (MAX_CONFIGURATION_SIZE + 1))
    assert response.status_code == 413
    assert "limit" in response.json()["message"]


def test_body_over_the_limit_while_reading(enclave: Enclave) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_CONFIGURATION_SIZE // 65536 + 2):
            yield b" " * 65536

    with client(enclave.port, enclave.pinned) as owner:
        # A generator body goes out chunked: no Content-Length to check up front.
        try:
            response = owner.post("/", content=chunks())
        except httpx.TransportError:
            return  # the server answered 413 and closed before the client finished sending
    assert response.status_code == 413


@pytest.mark.parametrize(("method", "path", "status"), [("PUT", "/", 405), ("GET", "/admin", 404)])
def test_other_methods_and_paths(enclave: Enclave, method: str, path: str, status: int) -> None:
    with client(enclave.port, enclave.pinned) as owner:
        assert owner.request(method, path).status_code == status


def test_valid_configuration_after_refusals(enclave: Enclave) -> None:
    # Last in this module: the owner retries with a good request and it takes.
    response = _post(enclave, _ok(enclave, app_secrets={"k": "v"}))
    assert response.status_code == 200, response.text
    enclave.runtime.wait_for("serving app:app on https://")
    state = enclave.state()
    assert state is not None and state.configured and state.app_secrets == {"k": "v"}
    assert enclave.code_key.secret == state.code_key
    # Dozens of refused requests carried the code key: none of them logged it.
    assert_nowhere(
        enclave.runtime.output, secret_fragments(enclave.code_key.secret), "the runtime's output"
    )


def test_certificate_mode_key_and_names_are_checked(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    pki = OwnerPki.generate()
    narrow = OwnerPki.generate(names=("localhost",))
    code = CodeUnderTest.folder(EXAMPLES / "helloworld")
    launch = Launch(
        code,
        tmp_path / "state",
        tmp_path / "sim",
        tls=TlsMode.OWNER,
        certificate=narrow.write_certificate(tmp_path / "owner.pem"),
    )
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, _ = verify_enclave(port, platform, launch.measurement())
        app_id = str(launch.app_id)
        table = [
            ({"uuid": app_id}, "ssl_private_key is required"),
            ({"uuid": app_id, "ssl_private_key": "not a key"}, "not an unencrypted PEM"),
            ({"uuid": app_id, "ssl_private_key": pki.key_pem}, "does not match the --certificate"),
            # The right key, but the certificate lacks the --san 127.0.0.1.
            ({"uuid": app_id, "ssl_private_key": narrow.key_pem}, "does not cover the --san"),
        ]
        with client(port, trusting(cert)) as owner:
            for body, fragment in table:
                response = owner.post("/", json=body)
                assert response.status_code == 400, response.text
                assert fragment in response.json()["message"]
            assert owner.get("/").headers["Confide-Status"] == "waiting"
        runtime.terminate()


def test_idle_and_slow_clients_do_not_block_configuration(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.folder(EXAMPLES / "helloworld")
    launch = Launch(code, tmp_path / "state", tmp_path / "sim")
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, _ = verify_enclave(port, platform, launch.measurement())
        pinned = trusting(cert)
        # An idle TCP connection that never starts TLS, and a TLS one that sends half a request.
        idle = socket.create_connection((HOST, port), timeout=DEADLINE)
        slow_raw = socket.create_connection((HOST, port), timeout=DEADLINE)
        slow = pinned.wrap_socket(slow_raw, server_hostname=HOST)
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        try:
            started = time.monotonic()
            with client(port, pinned) as owner:
                response = owner.post("/", json={"uuid": str(launch.app_id)})
            assert response.status_code == 200, response.text
            runtime.wait_for("serving app:app on https://")
            with client(port, pinned) as user:
                assert user.get("/").text == "Hello world"
            # Well under the read timeout: nobody waited for the idle clients.
            assert time.monotonic() - started < 15
        finally:
            idle.close()
            slow.close()
        runtime.terminate()
