"""The operator's Gramine backend (ADR 0018): what it refuses, and how it finds enclaves again.

The launch itself (manifest, signing, gramine-sgx, statuses, restarts) runs end to
end in tests/e2e/test_gramine_launch.py with Gramine's stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from confide.operator import (
    MANIFEST_STEM,
    AppSpec,
    FileLogSource,
    GramineBackend,
    LaunchRefused,
    LocalProcessBackend,
    TeeBackend,
)
from confide.wire import LaunchManifest, TlsMode

T = TypeVar("T")
STEP_TIMEOUT = 30.0


def run(step: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await step()

    return asyncio.run(bounded())


@contextmanager
def process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process with this command line that runs until the test ends."""
    proc = subprocess.Popen(  # noqa: S603 - this interpreter
        [sys.executable, "-c", "import sys; sys.stdin.read()", *argv], stdin=subprocess.PIPE
    )
    with proc:
        try:
            yield proc
        finally:
            proc.kill()


def spec(tmp_path: Path) -> AppSpec:
    app_id = uuid.uuid4()
    manifest = LaunchManifest.for_app(
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        certificate_sha256=None,
        san=(f"{app_id}.confide.test",),
        subject=None,
        package_sha256=bytes(32),
        runtime_sha256=bytes(32),
    )
    package = tmp_path / "package.bin"
    package.write_bytes(b"ciphertext")
    return AppSpec(app_id, manifest, package, None, memory_mib=512, cores=1)


@pytest.fixture(name="backend")
def backend_fixture(tmp_path: Path) -> GramineBackend:
    (tmp_path / "empty-bin").mkdir()
    return GramineBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        search_path=str(tmp_path / "empty-bin"),
    )


def test_without_gramine_installed_a_launch_is_refused_naming_the_tool(
    backend: GramineBackend, tmp_path: Path
) -> None:
    with pytest.raises(LaunchRefused, match="gramine-sgx-sign is not installed") as caught:
        run(lambda: backend.start(spec(tmp_path)))
    assert caught.value.hint is not None and "docs/hardware.md" in caught.value.hint


def test_the_local_backend_no_longer_runs_gramine_as_a_plain_process(tmp_path: Path) -> None:
    """``tee = "gramine"`` used to start ``confide runtime --tee gramine`` unenclaved."""
    local = LocalProcessBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        tee=TeeBackend.GRAMINE,
    )
    with pytest.raises(LaunchRefused, match="simulated TEE only"):
        run(lambda: local.start(spec(tmp_path)))


def test_an_enclave_is_adopted_only_from_its_record_and_its_command_line(
    backend: GramineBackend,
) -> None:
    app_id = uuid.uuid4()
    folder = backend.app_dir(app_id)
    folder.mkdir(parents=True)
    base = folder / MANIFEST_STEM
    record = folder / "runtime.json"
    with process(str(base)) as enclave, process(str(folder / "other")) as stranger:
        record.write_text(json.dumps({"pid": enclave.pid, "port": 4321}))
        handle = run(lambda: backend.adopt(enclave.pid, app_id))
        assert handle is not None
        assert (handle.pid, handle.port, handle.handoff) == (enclave.pid, 4321, None)
        found = run(backend.discover)
        assert [(h.app_id, h.pid) for h in found] == [(app_id, enclave.pid)]
        # Another process (a reused pid) is never taken for the enclave.
        assert run(lambda: backend.adopt(stranger.pid, app_id)) is None
        # Nor the enclave's pid when the record names another one, or no valid port.
        record.write_text(json.dumps({"pid": stranger.pid, "port": 4321}))
        assert run(lambda: backend.adopt(enclave.pid, app_id)) is None
        record.write_text(json.dumps({"pid": enclave.pid, "port": "4321"}))
        assert run(lambda: backend.adopt(enclave.pid, app_id)) is None
        # Another app's record and path do not make it this app's.
        assert run(lambda: backend.adopt(enclave.pid, uuid.uuid4())) is None
