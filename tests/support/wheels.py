"""Build small wheels in tests (a real wheel layout: a package, ``.dist-info`` with METADATA,
WHEEL and RECORD), and locks of them, with no network."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from confide.wire import LockedRequirement, RequirementsLock

if TYPE_CHECKING:
    import pytest


def wheel_bytes(
    name: str,
    version: str,
    files: dict[str, bytes] | None = None,
    *,
    symlink: str | None = None,
) -> bytes:
    """A pure-Python wheel of ``name`` (a module of the same name by default), deterministic.

    ``files`` maps paths in the wheel to their bytes (they may be hostile: ``../x``);
    ``symlink`` adds an entry marked as a symbolic link to that target.
    """
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    content = dict(
        files
        if files is not None
        else {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()}
    )
    content[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    content[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: confide-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    content[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in content.items():
            entry = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            entry.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(entry, data)
        if symlink is not None:
            entry = zipfile.ZipInfo(f"{module}/link", date_time=(2020, 1, 1, 0, 0, 0))
            entry.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(entry, symlink)
    return out.getvalue()


def write_wheel(folder: Path, name: str, version: str, data: bytes | None = None) -> Path:
    """Write a wheel file named as pip expects into ``folder`` (a find-links folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    path.write_bytes(data if data is not None else wheel_bytes(name, version))
    return path


def lock_of(*wheels: tuple[str, str, bytes], python: str = "3.11") -> RequirementsLock:
    """A lock of ``(name, version, wheel bytes)``."""
    return RequirementsLock(
        python=python,
        platform="manylinux_2_28_x86_64",
        source="tests",
        requirements=tuple(
            LockedRequirement(name, version, hashlib.sha256(data).digest())
            for name, version, data in sorted(wheels)
        ),
    )


def cache_wheel(cache: Path, data: bytes, sha256: bytes | None = None) -> Path:
    """Put ``data`` in a wheel cache folder under ``sha256`` (default: its own hash)."""
    name = (sha256 or hashlib.sha256(data).digest()).hex()
    path = cache / name[:2] / name[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


FLIT_PYPROJECT = """\
[build-system]
requires = ["flit_core >=3.2,<5"]
build-backend = "flit_core.buildapi"

[project]
name = "{name}"
version = "{version}"
description = "A tiny test distribution"
"""

LEGACY_SETUP = """\
from setuptools import setup

setup(name="{name}", version="{version}", packages=["{module}"])
"""


def sdist_bytes(
    name: str, version: str, *, backend: str = "flit", extra: dict[str, bytes] | None = None
) -> bytes:
    """A pure-Python source distribution (``.tar.gz``) of ``name``: built with flit_core
    (``backend="flit"``, a pyproject.toml naming it) or setuptools' legacy backend
    (``backend="legacy"``: a setup.py and no pyproject.toml). Deterministic."""
    module = name.replace("-", "_")
    top = f"{module}-{version}"
    files = {
        f"{top}/{module}/__init__.py": (
            f"VERSION = {version!r}\nBUILT = 'from its sdist'\n".encode()
        ),
        f"{top}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    }
    if backend == "flit":
        files[f"{top}/pyproject.toml"] = FLIT_PYPROJECT.format(name=name, version=version).encode()
    else:
        files[f"{top}/setup.py"] = LEGACY_SETUP.format(
            name=name, version=version, module=module
        ).encode()
    for path, data in (extra or {}).items():
        files[f"{top}/{path}"] = data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 315532800, 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def download_wheels(folder: Path, *names: str) -> dict[str, Path]:
    """The wheels of ``names`` from the package index (pip's cache first), by name; the
    caller skips when the index cannot be reached."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(  # noqa: S603 - our argv
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            *names,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = {}
    for path in folder.glob("*.whl"):
        found[path.name.split("-", 1)[0].lower().replace("_", "-")] = path
    return found


@contextlib.contextmanager
def pep503_index(files: dict[str, bytes]) -> Iterator[str]:
    """A PEP 503 index on 127.0.0.1 (port 0) serving ``files`` (path -> bytes)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            if self.path.endswith("/"):
                self.send_header("Content-Type", "text/html")  # pip reads no other page
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def index_page(file_name: str, data: bytes) -> bytes:
    """A PEP 503 page linking ``/files/<file_name>`` with the SHA-256 of ``data``."""
    digest = hashlib.sha256(data).hexdigest()
    return f'<a href="../../files/{file_name}#sha256={digest}">{file_name}</a>'.encode()


# -- A locked app with one tiny dependency, end to end (the wheel-cache tamper tests) -------------

#: The dependency a locked test app imports.
TINYDEP = wheel_bytes("tinydep", "1.0")
#: The same name and version, with a payload: what a malicious cache would serve.
TINYDEP_BACKDOORED = wheel_bytes(
    "tinydep", "1.0", {"tinydep/__init__.py": b"VERSION = '1.0'\nBACKDOOR = True\n"}
)


def resolve_offline(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the owner's resolver (pip) read ``index``, a local folder, and nothing else."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))


def tinydep_project(root: Path, name: str) -> Path:
    """A project whose ASGI app imports ``tinydep`` (declared in ``requirements.txt``),
    answers its ``VERSION``, and refuses to start when the wheel is the backdoored one."""
    code = root / "code"
    code.mkdir(parents=True)
    (code / "app.py").write_text(
        "import tinydep\n\n"
        "if getattr(tinydep, 'BACKDOOR', False):\n"
        "    raise SystemExit('the backdoored wheel ran')\n\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': tinydep.VERSION.encode()})\n"
    )
    (code / "requirements.txt").write_text("tinydep==1.0\n")
    (root / "tests").mkdir()
    project = root / "confide.toml"
    project.write_text(
        f'name = "{name}"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\n'
        f'code = {json.dumps(str(code))}\ntests = "tests"\nproject = "default"\n'
        'hardware = "small"\n'
    )
    return project
