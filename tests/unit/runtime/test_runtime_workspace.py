"""The RAM code folder: measured code only, private secrets files, the app imported from it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.crypto import CryptoError, PackageKey, encrypt_package
from confide.errors import AppLoadError, UsageError
from confide.runtime import CODE_ROOT, CodeSource, Workspace, code_folder_owner, remove_orphans
from confide.runtime._workspace import load_app
from confide.wire import APP_UNUSABLE_LINE, app_unusable

APP_ID = uuid.UUID("0b7e4a52-3c1d-4f6e-9a8b-1c2d3e4f5a6b")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "app.py").write_text("app = 'hello'\n")
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.create(APP_ID, root=tmp_path)
    yield ws
    ws.remove()


def test_create_is_private_and_remove_cleans_up(tmp_path: Path) -> None:
    ws = Workspace.create(APP_ID, root=tmp_path)
    assert stat.S_IMODE(ws.root.stat().st_mode) == 0o700
    ws.remove()
    assert not ws.root.exists()
    default = Workspace.create(APP_ID)
    try:
        assert default.root.parent == CODE_ROOT == Path("/dev/shm")
        assert stat.S_IMODE(default.root.stat().st_mode) == 0o700
    finally:
        default.remove()


def test_no_ram_folder_is_an_error_never_a_folder_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's TMPDIR is not a fallback: plaintext goes to RAM or nowhere (ADR 0011).
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with pytest.raises(UsageError, match="RAM folder .* is missing"):
        Workspace.create(APP_ID, root=tmp_path / "no-shm")
    assert list(tmp_path.iterdir()) == []


def test_plaintext_code_is_installed_only_if_unchanged(app_dir: Path, workspace: Workspace) -> None:
    source = CodeSource.plaintext_folder(app_dir)
    (app_dir / "app.py").write_text("app = 'changed'\n")
    with pytest.raises(UsageError, match="changed since launch"):
        workspace.install_code(source, None)
    assert not workspace.app_dir.exists()
    (app_dir / "app.py").write_text("app = 'hello'\n")
    workspace.install_code(source, None)
    assert (workspace.app_dir / "app.py").read_text() == "app = 'hello'\n"


def test_package_needs_its_key_and_its_measured_bytes(
    app_dir: Path, workspace: Workspace, tmp_path: Path
) -> None:
    key = PackageKey.generate()
    package = tmp_path / "app.pkg"
    with package.open("wb") as f:
        encrypt_package(app_dir, f, key)
    source = CodeSource.encrypted(package)
    with pytest.raises(CryptoError):
        workspace.install_code(source, PackageKey.generate())
    assert not workspace.app_dir.exists()
    # Swapped after launch for another package under the same key: refused.
    (app_dir / "app.py").write_text("app = 'other'\n")
    with package.open("wb") as f:
        encrypt_package(app_dir, f, key)
    with pytest.raises(UsageError, match="changed since launch"):
        workspace.install_code(source, key)
    assert not workspace.app_dir.exists()


def test_secrets_files(workspace: Workspace) -> None:
    env = workspace.write_secrets({"a": 1}, {"b": [2]})
    assert set(env) == {"SECRETS_PATH", "SEALED_SECRETS_PATH", "HOME", "TMPDIR"}
    assert json.loads(Path(env["SECRETS_PATH"]).read_text()) == {"a": 1}
    assert json.loads(Path(env["SEALED_SECRETS_PATH"]).read_text()) == {"b": [2]}
    for variable in ("SECRETS_PATH", "SEALED_SECRETS_PATH"):
        assert stat.S_IMODE(Path(env[variable]).stat().st_mode) == 0o600
    assert stat.S_IMODE(workspace.private_dir.stat().st_mode) == 0o700
    assert Path(env["HOME"]).is_dir() and Path(env["HOME"]).is_relative_to(workspace.root)
    assert Path(env["TMPDIR"]).is_dir() and Path(env["TMPDIR"]).is_relative_to(workspace.root)
    assert stat.S_IMODE(Path(env["TMPDIR"]).stat().st_mode) == 0o700
    assert set(workspace.write_secrets(None, None)) == {"HOME", "TMPDIR"}


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


@pytest.mark.usefixtures("clean_imports")
def test_load_app(tmp_path: Path) -> None:
    name = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("app = 'hello'\n")
    assert load_app(tmp_path, f"{name}:app") == "hello"
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        load_app(tmp_path, f"{name}:nope")
    with pytest.raises(UsageError, match="no module 'missing_module_x'"):
        load_app(tmp_path, "missing_module_x:app")


#: (the app module's source, python_application's attribute, what the error names, the fix)
UNLOADABLE = {
    "a module the app imports is missing": (
        "import pandas_missing_x\napp = 1\n",
        "app",
        "the app imports the module 'pandas_missing_x', which is not installed",
        "add it to the requirements",
    ),
    "a submodule of a missing package": (
        "from missing_pkg_x.sub import thing\napp = 1\n",
        "app",
        "the module 'missing_pkg_x'",
        "add it to the requirements",
    ),
    "no such attribute": ("app = 1\n", "application", "no attribute 'application'", "check"),
    "a name the module does not have": (
        "from os import no_such_name_x\napp = 1\n",
        "app",
        "cannot import name 'no_such_name_x'",
        "check the app's imports",
    ),
}


@pytest.mark.usefixtures("clean_imports")
@pytest.mark.parametrize(
    ("source", "attribute", "names", "fix"), UNLOADABLE.values(), ids=list(UNLOADABLE)
)
def test_an_app_that_cannot_be_imported_is_an_app_load_error(
    tmp_path: Path, source: str, attribute: str, names: str, fix: str
) -> None:
    """What no restart can fix is its own error, naming what is missing and the fix (the
    runtime turns it into its exit status and last line, issue 15, 5)."""
    name = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    with pytest.raises(AppLoadError) as info:
        load_app(tmp_path, f"{name}:{attribute}")
    assert names in info.value.message and fix in (info.value.hint or "")
    line = f"{APP_UNUSABLE_LINE}{info.value}"
    assert app_unusable(f"the runtime exited with code 4; last output: {line}") == str(info.value)
    assert app_unusable("the runtime exited with code 1; last output: error: boom") is None


@pytest.mark.usefixtures("clean_imports")
def test_an_installed_module_cannot_stand_in_for_the_app(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("app = 'mine'\n")
    with pytest.raises(UsageError, match="outside the code folder"):
        load_app(tmp_path, "json:dumps")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - this interpreter
    child.wait()
    return child.pid


def test_fresh_folders_carry_the_app_and_the_pid_and_orphans_are_removed(tmp_path: Path) -> None:
    ours = Workspace.create(APP_ID, root=tmp_path)
    assert ours.root.name.startswith(f"confide-code-{APP_ID}-{os.getpid()}-")
    assert code_folder_owner(ours.root.name) == (APP_ID, os.getpid())
    dead = tmp_path / f"confide-code-{APP_ID}-{_dead_pid()}-abc123"
    (dead / "app").mkdir(parents=True)
    (dead / "app" / "app.py").write_text("secret = 'plaintext code'\n")
    other_app = uuid.uuid4()
    other_dead = tmp_path / f"confide-code-{other_app}-{_dead_pid()}-abc"
    other_dead.mkdir()
    kept = [
        tmp_path / f"confide-code-{APP_ID}-{os.getppid()}-live",  # a process that runs
        tmp_path / f"confide-code-{_dead_pid()}-abc",  # not our naming (no app id)
        tmp_path / "confide-code-notapid",
        tmp_path / "other-folder",
    ]
    for folder in kept:
        folder.mkdir()
    link = tmp_path / f"confide-code-{APP_ID}-{_dead_pid()}-link"
    link.symlink_to(tmp_path / "other-folder")

    # One app's folders only, then every app's.
    assert remove_orphans(tmp_path, app_id=APP_ID) == [dead]
    assert not dead.exists() and other_dead.is_dir()
    assert remove_orphans(tmp_path) == [other_dead]
    assert ours.root.is_dir() and all(folder.is_dir() for folder in kept)
    assert link.is_symlink()  # a link is never followed nor removed
    # A stricter check of who runs (the operator's: is that pid a runtime of that app?).
    stricter = remove_orphans(tmp_path, running=lambda app_id, pid: False)
    assert sorted(stricter) == sorted([ours.root, kept[0]])
    assert remove_orphans(tmp_path / "missing") == []
