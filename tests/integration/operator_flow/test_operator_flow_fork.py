"""Runtimes forked from the pre-imported runtime parent (issue 14; ADR 0031).

Each test starts real runtimes through :class:`LocalProcessBackend` with ``fork=True``
and checks what a fresh process gave: its own keys, no descriptor of the parent's
channel or of another app, the fixed environment, a command line adoption can read,
exit codes and last lines; and what the parent adds: a stale or dead parent is
replaced, and its runtimes run on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from confide.client._verify import fetch_enclave_certificate
from confide.crypto import PackageKey, encrypt_package
from confide.operator import (
    AppSpec,
    FileLogSource,
    LocalProcessBackend,
    RuntimeHandle,
    TeeBackend,
)
from confide.operator._backend import LOCAL_RUNTIME_ENVIRONMENT
from confide.runtime import EXIT_EXPIRED, runtime_code_hash
from confide.tee import SimulatedPlatform
from confide.wire import HostPort, LaunchManifest, TlsMode

T = TypeVar("T")
HELLO = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
#: Each test's asynchronous part is bounded by this (seconds; runtimes start at nice 10).
TEST_TIMEOUT = 120.0
_POLL = 0.05
#: Seconds until a runtime measured to expire soon stops serving.
EXPIRES_IN = 8


def run(body: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT):
            return await body()

    return asyncio.run(bounded())


def spec(tmp_path: Path, *, expires_in: int = 3600) -> AppSpec:
    app_id = uuid.uuid4()
    package = tmp_path / f"{app_id}.pkg"
    with package.open("wb") as f:
        info = encrypt_package(HELLO, f, PackageKey.generate())
    manifest = LaunchManifest(
        runtime_sha256=runtime_code_hash(),
        package_sha256=info.digest,
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int(datetime.now(UTC).timestamp()) + expires_in,
        certificate_sha256=None,
        san=(f"{app_id}.confide.test",),
        subject=None,
    )
    return AppSpec(app_id, manifest, package, None, memory_mib=512, cores=1)


def backend_of(tmp_path: Path, *, fork: bool = True) -> LocalProcessBackend:
    # The simulated platform, as the operator makes it before any runtime starts.
    SimulatedPlatform.open(tmp_path / "data" / "simulation", now=datetime.now(UTC))
    return LocalProcessBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        tee=TeeBackend.SIMULATION,
        fork=fork,
    )


async def listening(handle: RuntimeHandle) -> None:
    while True:
        try:
            socket.create_connection((handle.host, handle.port), timeout=1).close()
            return
        except OSError:
            await asyncio.sleep(_POLL)


async def ended(backend: LocalProcessBackend, handle: RuntimeHandle) -> None:
    while await backend.is_alive(handle):
        await asyncio.sleep(_POLL)


def descriptors(pid: int) -> set[str]:
    """What each open descriptor of ``pid`` is (``socket:[inode]``, a path...)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return found


def environment(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs = (item.decode().split("=", 1) for item in raw.split(b"\0") if item)
    return {key: value for key, value in pairs}


def public_key(handle: RuntimeHandle, app_id: uuid.UUID) -> bytes:
    # Read, not trusted: only compared between the two runtimes.
    certificate = fetch_enclave_certificate(
        HostPort(handle.host, handle.port), f"{app_id}.confide.test", timeout=10
    )
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def parent_pid(backend: LocalProcessBackend) -> int:
    parent = backend._parent
    assert parent is not None  # started by the first forked launch
    return parent.process.pid


def test_two_forked_runtimes_have_their_own_keys_descriptors_and_identity(
    tmp_path: Path,
) -> None:
    backend = backend_of(tmp_path)
    fresh_backend = backend_of(tmp_path / "fresh", fork=False)
    one, two, fresh = spec(tmp_path), spec(tmp_path), spec(tmp_path)

    async def body() -> None:
        first = await backend.start(one)
        second = await backend.start(two)
        third = await fresh_backend.start(fresh)
        try:
            await asyncio.gather(listening(first), listening(second), listening(third))
            parent = parent_pid(backend)
            # Forked, not started afresh: the parent's children, under the same parent.
            for handle in (first, second):
                with open(f"/proc/{handle.pid}/stat") as f:
                    assert int(f.read().rsplit(")", 1)[1].split()[1]) == parent
            # Different keys and certificates.
            assert public_key(first, one.app_id) != public_key(second, two.app_id)
            # No descriptor of the parent's (its channel) nor of the other app.
            inherited = descriptors(parent) - {os.devnull}
            assert any(d.startswith("socket:") for d in inherited)  # its channel
            for handle, other in ((first, two), (second, one)):
                held = descriptors(handle.pid)
                assert not held & inherited
                assert str(backend._log_source.log_path(other.app_id)) not in held
                assert not any(str(other.app_id) in d for d in held)
            first_held, second_held = descriptors(first.pid), descriptors(second.pid)
            assert not {d for d in first_held & second_held if d.startswith("socket:")}
            # The environment a fresh start gets, nothing of the parent's or the operator's.
            assert environment(first.pid) == dict(LOCAL_RUNTIME_ENVIRONMENT)
            assert environment(first.pid) == environment(third.pid)
            # Found by its command line, as a fresh runtime is: adoption and discovery.
            later = backend_of(tmp_path)
            found = {h.pid: h for h in await later.discover()}
            assert found[first.pid].port == first.port
            assert found[second.pid].app_id == two.app_id
            assert await later.adopt(first.pid, one.app_id) is not None
            assert await later.adopt(first.pid, two.app_id) is None
            # Same CPU priority as a fresh start.
            assert os.getpriority(os.PRIO_PROCESS, first.pid) == os.getpriority(
                os.PRIO_PROCESS, third.pid
            )
        finally:
            for handle in (first, second):
                await backend.stop(handle)
            await fresh_backend.stop(third)
            backend.detach()

    run(body)


def test_exit_codes_and_last_lines_reach_the_supervisor_as_before(tmp_path: Path) -> None:
    """What the supervisor reads (``exit_reason``: the code, a signal, the last line; an
    unusable app's line is found the same way) comes through the parent as from Popen."""
    backend = backend_of(tmp_path)
    # Measured to stop serving a few seconds from now: it exits with EXIT_EXPIRED.
    expiring = spec(tmp_path, expires_in=EXPIRES_IN)
    killed = spec(tmp_path)

    async def body() -> tuple[str, str]:
        first = await backend.start(expiring)
        second = await backend.start(killed)
        try:
            assert {first.pid, second.pid} <= set(backend._forked)
            await listening(second)
            os.kill(second.pid, signal.SIGKILL)
            await ended(backend, second)
            await ended(backend, first)
            return backend.exit_reason(first), backend.exit_reason(second)
        finally:
            backend.release(first)
            backend.release(second)
            backend.detach()

    expired, signalled = run(body)
    assert f"the runtime exited with code {EXIT_EXPIRED}; last output: expired: " in expired
    assert signalled.startswith("the runtime was killed by SIGKILL")


def test_a_killed_parent_leaves_its_runtimes_running_and_the_next_start_works(
    tmp_path: Path,
) -> None:
    backend = backend_of(tmp_path)
    one, two = spec(tmp_path), spec(tmp_path)

    async def body() -> None:
        first = await backend.start(one)
        await listening(first)
        old = parent_pid(backend)
        os.kill(old, signal.SIGKILL)
        parent = backend._parent
        assert parent is not None
        await asyncio.to_thread(parent.process.wait, 10)
        # Still running, now watched by its command line.
        assert await backend.is_alive(first)
        second = await backend.start(two)
        try:
            await listening(second)
            assert parent_pid(backend) != old
            assert second.pid in backend._forked
            await backend.stop(first)
            assert not await backend.is_alive(first)
            assert await backend.is_alive(second)
        finally:
            await backend.stop(second)
            backend.detach()

    run(body)


def test_an_upgraded_runtime_gets_a_new_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(tmp_path)
    one, two = spec(tmp_path), spec(tmp_path)

    async def body() -> None:
        first = await backend.start(one)
        old = backend._parent
        assert old is not None
        # The installed files now measure differently from what the parent imported.
        monkeypatch.setattr(old, "digest", bytes(32))
        second = await backend.start(two)
        try:
            assert backend._parent is not old and backend._parent is not None
            assert not old.alive  # told to go: its channel closed
            assert second.pid in backend._forked
            await asyncio.gather(listening(first), listening(second))
        finally:
            await backend.stop(first)
            await backend.stop(second)
            backend.detach()

    run(body)
