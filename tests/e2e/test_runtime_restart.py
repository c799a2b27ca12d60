"""End to end: restarts resume from the sealed state; another launch cannot read it; timeouts.

The sealed state holds no plaintext: the state folder is searched for the
secrets, the code key and the code itself.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest

from support.runtimes import (
    DEADLINE,
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    RuntimeProcess,
    assert_nowhere,
    client,
    new_platform,
    running,
    secret_fragments,
    trusting,
    verify_enclave,
)

pytestmark = pytest.mark.slow

SECRET = "restart-secret-4e0b9d"


def _error_lines(runtime: RuntimeProcess) -> list[str]:
    return [line for line in runtime.text.splitlines() if line.startswith("error:")]


def test_restart_resumes_and_other_measurement_cannot_unseal(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    assert code.key is not None
    launch = Launch(code, tmp_path / "state", tmp_path / "sim")

    with running(launch.args()) as first:
        port = first.port()
        cert, _ = verify_enclave(port, platform, launch.measurement())
        with client(port, trusting(cert)) as owner:
            response = owner.post(
                "/",
                json={
                    "uuid": str(launch.app_id),
                    "code_secret_key": code.key.hex(),
                    "app_secrets": {"token": SECRET},
                },
            )
            assert response.status_code == 200, response.text
        first.wait_for("serving app:app on https://")
        assert first.terminate() == 0

    # Same arguments, same measurement: the app comes back with no configuration.
    with running(launch.args()) as second:
        second.wait_for("resuming the app from the sealed state")
        port = second.port("serving app:app")
        again, _ = verify_enclave(port, platform, launch.measurement())
        assert again != cert  # a fresh quote...
        assert again.public_key() == cert.public_key()  # ...for the same sealed TLS key
        with client(port, trusting(again)) as user:
            assert user.get("/").text == "Hello world"
            assert user.get("/health").json()["secrets"] == ["token"]
        assert second.terminate() == 0
    assert "waiting for the configuration" not in second.text

    # Another launch (here: another SAN) measures differently and cannot unseal the state.
    other = dataclasses.replace(launch, san=("other.example", "127.0.0.1"))
    assert other.measurement() != launch.measurement()
    with running(other.args()) as third:
        assert third.wait_exit() == 2
        errors = _error_lines(third)
        assert len(errors) == 1 and "cannot unseal" in errors[0], third.text
        assert len(third.text.strip().splitlines()) == 1, third.text

    state = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert_nowhere(
        state,
        [*secret_fragments(SECRET, code.key.secret), b"Hello world", b"flask"],
        "the state folder",
    )
    for runtime in (first, second, third):
        assert_nowhere(runtime.output, secret_fragments(SECRET, code.key.secret), "the output")


def test_timeout_stops_an_unconfigured_runtime(tmp_path: Path) -> None:
    new_platform(tmp_path / "sim")
    launch = Launch(
        CodeUnderTest.folder(EXAMPLES / "helloworld"),
        tmp_path / "state",
        tmp_path / "sim",
        timeout=0.5,
    )
    with running(launch.args()) as runtime:
        assert runtime.wait_exit() == 2
    errors = _error_lines(runtime)
    assert len(errors) == 1 and "not configured within" in errors[0], runtime.text
    assert not launch.code_folders()


def test_sigterm_while_waiting_stops_cleanly(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    launch = Launch(
        CodeUnderTest.folder(EXAMPLES / "helloworld"),
        tmp_path / "state",
        tmp_path / "sim",
    )
    with running(launch.args()) as runtime:
        port = runtime.port()
        code_dir = launch.code_dir()
        cert, _ = verify_enclave(port, platform, launch.measurement())
        # A client stuck halfway through a request does not hold the stop up.
        raw = socket.create_connection((HOST, port), timeout=DEADLINE)
        with trusting(cert).wrap_socket(raw, server_hostname=HOST) as stuck:
            stuck.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            started = time.monotonic()
            assert runtime.terminate(timeout=15) == 0
            assert time.monotonic() - started < 10
    assert "stopping on SIGTERM" in runtime.text
    assert not code_dir.exists()
