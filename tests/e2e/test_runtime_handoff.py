"""End to end: a runtime started with ``--handoff`` serves connections handed to it.

A stand-in for the operator's router accepts TCP connections on its own port
and passes each one to the runtime with :func:`hand_off` (the router's own
hand-off is tested in tests/unit/operator). Through it, the owner verifies
the enclave, configures it and uses the app (HTTP/1.1 and HTTP/2): the
runtime does the TLS handshake on the handed-off socket as on an accepted
one, in both of its phases. The measurement does not depend on the hand-off
path.
"""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

import pytest

from confide.runtime._handoff import hand_off
from support.runtimes import (
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    client,
    new_platform,
    running,
    trusting,
    verify_enclave,
)

pytestmark = pytest.mark.slow


class HandingOff:
    """Accepts on a port of its own and hands every connection off to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.results: list[bool] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            with connection:
                self.results.append(hand_off(self.path, connection))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=10)


def test_handed_off_connections_are_verified_configured_and_served(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    assert code.key is not None
    launch = Launch(code, tmp_path / "state", tmp_path / "sim")
    socket_path = tmp_path / "run" / "handoff.sock"
    socket_path.parent.mkdir(mode=0o700)
    router = HandingOff(socket_path)
    try:
        with running([*launch.args(), "--handoff", str(socket_path)]) as runtime:
            runtime.port()  # listening, so the hand-off socket is there too
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            # The owner checks the enclave through the hand-off: the measurement is the
            # one computed without any hand-off path.
            cert, verified = verify_enclave(router.port, platform, launch.measurement())
            pinned = trusting(cert)
            with client(router.port, pinned) as owner:
                assert owner.get("/").headers["Confide-Status"] == "waiting"
                payload = {"uuid": str(launch.app_id), "code_secret_key": code.key.hex()}
                configured = owner.post("/", json=payload)
                assert configured.status_code == 200, configured.text
            runtime.wait_for("serving app:app on https://")
            with client(router.port, pinned) as user:
                for _ in range(3):
                    assert user.get("/").text == "Hello world"
            with client(router.port, pinned, http2=True) as user:
                response = user.get("/")
                assert response.http_version == "HTTP/2" and response.text == "Hello world"
            with client(runtime.port("serving app:app"), pinned) as direct:
                assert direct.get("/").text == "Hello world"  # its own port still serves
            assert router.results and all(router.results)
            assert runtime.terminate() == 0
        assert not socket_path.exists()  # removed at exit
    finally:
        router.close()
