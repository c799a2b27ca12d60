"""End to end: the operator removes the decrypted code that killed runtimes leave in RAM.

A runtime decrypts its app into ``/dev/shm/confide-code-<app id>-<pid>-...``
and removes it when it stops; one killed with SIGKILL cannot. Here no later
runtime of the app can clean up for it either: the package blob is gone, so
each restart is refused and the app ends ``on_error``. What removes the code
is the operator:

1. when it sees a runtime killed with SIGKILL (then the app goes on_error);
2. at its own start, for a runtime killed while no operator ran.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from confide.operator import BlobStore
from confide.runtime import CODE_ROOT, code_folder_owner
from support.operators import (
    Deployed,
    OperatorProcess,
    configure_when_ready,
    create_token,
    deploy,
    kill_runtimes,
    package,
    wait_gone,
    wait_status,
)
from support.runtimes import poll

pytestmark = pytest.mark.slow


def code_folders(app_id: uuid.UUID) -> list[Path]:
    return sorted(CODE_ROOT.glob(f"confide-code-{app_id}-*"))


def running_with_code(api: httpx.Client, port: int, app: Deployed, data: Path) -> tuple[int, Path]:
    """Configure ``app``; its runtime's pid and code folder (holding the code and secrets)."""
    wait_status(api, app.id, "initializing")
    configure_when_ready(port, app, data)
    wait_status(api, app.id, "running")
    [folder] = code_folders(app.id)
    owner = code_folder_owner(folder.name)
    assert owner is not None and owner[0] == app.id
    assert (folder / "app" / "app.py").is_file()
    return owner[1], folder


def lose_package(data: Path, app: Deployed) -> None:
    """Remove the app's package blob: every later launch is refused (on_error)."""
    BlobStore(data / "blobs").path(app.code.digest).unlink()


def test_killed_runtimes_leave_no_code_in_ram(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = OperatorProcess(data)
    second: OperatorProcess | None = None
    try:
        token = create_token(data, "carol")
        with first.client(token) as api:
            crashed = deploy(api, package(tmp_path), name="crashed")
            orphaned = deploy(api, package(tmp_path), name="orphaned")
            pid, folder = running_with_code(api, first.router_port, crashed, data)
            other_pid, other_folder = running_with_code(api, first.router_port, orphaned, data)

            # 1. kill -9, and no runtime of this app will ever run again: on_error.
            lose_package(data, crashed)
            os.kill(pid, signal.SIGKILL)
            body = wait_status(api, crashed.id, "on_error")
            assert "missing" in body["status_detail"]
            assert not folder.exists() and code_folders(crashed.id) == []
            assert other_folder.is_dir()  # a live runtime's folder stays

        # 2. The operator dies, then a runtime, while no operator watches.
        first.kill()
        lose_package(data, orphaned)
        os.killpg(other_pid, signal.SIGKILL)
        wait_gone([other_pid])
        assert other_folder.is_dir()
        second = OperatorProcess(data, "--stop-apps-on-exit")
        with second.client(token) as api:
            wait_status(api, orphaned.id, "on_error")
        poll(lambda: not other_folder.exists(), "the operator to remove the orphaned code")
        assert code_folders(orphaned.id) == []
    finally:
        if second is not None:
            second.kill()
        first.kill()
        kill_runtimes(data)
