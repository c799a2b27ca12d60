"""The runtime's minimal PEP 517 frontend (ADR 0024 amendment): the build runs in a child
process whose only added path is the build env, bounded in time, file size and output;
the build system is read strictly from the sdist.

The backends here are small modules written into the build env by the test; a guard
backend of the same shape builds a wheel, so the refusals are the bounds, not a broken
frontend."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from confide.errors import RequirementError
from confide.runtime._pep517 import (
    LEGACY_BACKEND,
    BuildSystem,
    build_system,
    build_wheel,
    unpack_sdist,
)
from confide.wire import LockedRequirement

REQ = LockedRequirement("tinypkg", "1.0", bytes(32), "sdist")

GOOD = """
import os, sys, zipfile
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.writestr("tinypkg/__init__.py", "")
        # the frontend's child sees the build env and the standard library only
        z.writestr("paths.txt", "\\n".join(sys.path))
    return name
"""
BACKENDS = {
    "slow": "import time\ndef build_wheel(d, *a):\n    time.sleep(60)\n",
    "huge": (
        "import os\ndef build_wheel(d, *a):\n"
        "    with open(os.path.join(d, 'x.whl'), 'wb') as f:\n"
        "        f.write(b'0' * 4_000_000)\n    return 'x.whl'\n"
    ),
    "two": (
        "import os\ndef build_wheel(d, *a):\n"
        "    for n in ('a.whl', 'b.whl'):\n"
        "        open(os.path.join(d, n), 'wb').close()\n    return 'a.whl'\n"
    ),
    "fails": "def build_wheel(d, *a):\n    raise RuntimeError('the build broke ' + 'x' * 5000)\n",
    "needs site": "import confide\ndef build_wheel(d, *a):\n    return ''\n",
}


def _env(tmp: Path, name: str, code: str) -> Path:
    env = tmp / "env"
    env.mkdir(parents=True, exist_ok=True)
    (env / f"{name}.py").write_text(code)
    (tmp / "src").mkdir(exist_ok=True)
    return env


def test_a_build_runs_with_the_build_env_and_the_standard_library_only(tmp_path: Path) -> None:
    env = _env(tmp_path, "goodbackend", GOOD)
    wheel = build_wheel(
        tmp_path / "src", BuildSystem("goodbackend", ()), env, REQ, tmp_path / "dist"
    )
    with zipfile.ZipFile(wheel) as built:
        paths = built.read("paths.txt").decode().splitlines()
    assert paths[0] == str(env)
    assert not any("site-packages" in p for p in paths), paths


@pytest.mark.parametrize("case", sorted(BACKENDS))
def test_a_build_is_bounded(case: str, tmp_path: Path) -> None:
    module = case.replace(" ", "_") + "backend"
    env = _env(tmp_path, module, BACKENDS[case])
    started = time.monotonic()
    with pytest.raises(RequirementError) as caught:
        build_wheel(
            tmp_path / "src",
            BuildSystem(module, ()),
            env,
            REQ,
            tmp_path / "dist",
            timeout=3.0,
            max_file=1_000_000,
        )
    assert caught.value.code == "requirements.build_failed", str(caught.value)
    assert time.monotonic() - started < 30
    assert len(str(caught.value)) < 1000 and "\n" not in str(caught.value)
    # guard: the same frontend with the same bounds builds a good backend
    _env(tmp_path, "goodbackend", GOOD)
    build_wheel(
        tmp_path / "src",
        BuildSystem("goodbackend", ()),
        env,
        REQ,
        tmp_path / "ok",
        timeout=3.0,
        max_file=1_000_000,
    )


def _tar(entries: dict[str, bytes], *, link: str | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo("tinypkg-1.0/link")
            info.type, info.linkname = tarfile.SYMTYPE, link
            archive.addfile(info)
    return out.getvalue()


UNSAFE = {
    "parent path": _tar({"tinypkg-1.0/../../evil.py": b"x"}),
    "absolute path": _tar({"/tmp/evil.py": b"x"}),
    "two top folders": _tar({"a/x.py": b"x", "b/y.py": b"y"}),
    "symbolic link": _tar({"tinypkg-1.0/setup.py": b""}, link="/etc/passwd"),
    "not a tar": b"PK\x03\x04 not a tar",
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_an_unsafe_sdist_is_not_unpacked(case: str, tmp_path: Path) -> None:
    archive = tmp_path / "sdist.tar.gz"
    archive.write_bytes(UNSAFE[case])
    with pytest.raises(RequirementError) as caught:
        unpack_sdist(archive, REQ, tmp_path / "out")
    assert caught.value.code == "requirements.unsafe_sdist"
    assert not (tmp_path / "evil.py").exists()
    # guard: a sane sdist of the same shape unpacks
    archive.write_bytes(_tar({"tinypkg-1.0/setup.py": b""}))
    assert unpack_sdist(archive, REQ, tmp_path / "ok").name == "tinypkg-1.0"


SYSTEMS = {
    "no pyproject": (None, BuildSystem(LEGACY_BACKEND, ("setuptools",))),
    "no build-system": (b"[project]\nname = 'x'\n", BuildSystem(LEGACY_BACKEND, ("setuptools",))),
    "flit": (
        b'[build-system]\nrequires = ["flit_core >=3.2,<4"]\n'
        b'build-backend = "flit_core.buildapi"\n',
        BuildSystem("flit_core.buildapi", ("flit_core",)),
    ),
    "markers": (
        b'[build-system]\nrequires = ["setuptools>=61", "wheel; python_version<\'3.8\'"]\n',
        BuildSystem(LEGACY_BACKEND, ("setuptools", "wheel")),
    ),
}


@pytest.mark.parametrize("case", sorted(SYSTEMS))
def test_the_build_system_is_read_from_pyproject(case: str, tmp_path: Path) -> None:
    data, expected = SYSTEMS[case]
    if data is not None:
        (tmp_path / "pyproject.toml").write_bytes(data)
    assert build_system(tmp_path, REQ) == expected


BAD_SYSTEMS = {
    "in-tree backend": (
        b'[build-system]\nrequires = []\nbuild-backend = "b"\nbackend-path = ["."]\n',
        "requirements.backend_not_locked",
    ),
    "code as backend": (
        b'[build-system]\nrequires = []\nbuild-backend = "os;rm -rf"\n',
        "requirements.unsafe_sdist",
    ),
    "requires not a list": (
        b'[build-system]\nrequires = "setuptools"\n',
        "requirements.unsafe_sdist",
    ),
    "too many requires": (
        b"[build-system]\nrequires = [" + b'"a",' * 40 + b"]\n",
        "requirements.unsafe_sdist",
    ),
    "not toml": (b"[build-system\n", "requirements.unsafe_sdist"),
}


@pytest.mark.parametrize("case", sorted(BAD_SYSTEMS))
def test_a_build_system_we_cannot_run_safely_is_refused(case: str, tmp_path: Path) -> None:
    data, code = BAD_SYSTEMS[case]
    (tmp_path / "pyproject.toml").write_bytes(data)
    with pytest.raises(RequirementError) as caught:
        build_system(tmp_path, REQ)
    assert caught.value.code == code


SPAWNER = """
import os, subprocess, sys, time
def build_wheel(wheel_directory, *a):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(os.path.join(os.environ["HOME"], "..", "grandchild.pid"), "w") as f:
        f.write(str(child.pid))
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_build_that_times_out_leaves_no_process_behind(tmp_path: Path) -> None:
    env = _env(tmp_path, "spawner", SPAWNER)
    with pytest.raises(RequirementError, match="took more than"):
        build_wheel(
            tmp_path / "src", BuildSystem("spawner", ()), env, REQ, tmp_path / "dist", timeout=3.0
        )
    pid = int((tmp_path / "grandchild.pid").read_text())  # it did start
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "a process the build started outlived it"
