"""The Gramine manifest linter, and the files the runtime really imports.

:func:`lint_manifest` raises :class:`~confide.errors.ManifestError` for the first
rule a manifest breaks; each rule has a stable code::

    gramine.syntax            not TOML, or larger than MAX_MANIFEST_TEXT
    gramine.insecure          a key holds "insecure__" (Gramine's name for an unsafe switch)
    gramine.debug             sgx.debug is not false (a debug enclave can be read by the host)
    gramine.attestation       sgx.remote_attestation is not "dcap"
    gramine.file_policy       sgx.file_check_policy is set and not "strict"
    gramine.argv              loader.argv is missing, not a list of strings, or read from a file
    gramine.env               loader.env takes a value from the host (env_src_file, or a
                              passthrough of anything but PASSTHROUGH_ENV's two variables)
    gramine.sealing_key       an encrypted mount is not keyed "_sgx_mrenclave"
    gramine.allowed_code      an allowed file (readable, unmeasured) can hold code
    gramine.untrusted_import  a file the runtime imports is not a trusted file

An allowed entry "can hold code" when it is a folder (anything may be put there
later), when its name ends like code or a Python path entry (``.py``, ``.so``,
``.pth``, ``.zip``, ...), or when the file exists here and starts like an
executable (ELF, ``#!``) or a zip archive (Python imports from zips).

:func:`runtime_imports` runs the runtime's imports in a child interpreter with the
environment's path and returns the file of every module loaded, for the last rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final

from confide.errors import ManifestError, UsageError

from ._environment import RuntimeEnvironment
from ._manifest import PASSTHROUGH_ENV

#: Largest manifest text linted (an environment lists some thousands of files).
MAX_MANIFEST_TEXT: Final = 16 * 1024 * 1024
#: What ``confide runtime`` imports before it serves (the same set a test holds
#: free of the operator).
RUNTIME_MODULES: Final = ("confide.cli", "confide.runtime", "confide.tee", "confide.wire")
CODE_SUFFIXES: Final = frozenset(
    {".py", ".pyc", ".pyo", ".pyd", ".so", ".pth", ".zip", ".whl", ".egg", ".sh", ".dylib"}
)
_CODE_MAGIC: Final = (b"\x7fELF", b"#!", b"PK\x03\x04")
_IMPORT_TIMEOUT: Final = 120.0
MAX_IMPORTED: Final = 100_000


def _keys(table: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in table.items():
        name = f"{prefix}{key}"
        yield name
        if isinstance(value, dict):
            yield from _keys(value, name + ".")


def _get(table: Mapping[str, Any], dotted: str) -> Any:
    value: Any = table
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _uri_path(uri: object) -> str | None:
    if isinstance(uri, dict):
        uri = uri.get("uri")
    if not isinstance(uri, str) or not uri.startswith("file:"):
        return None
    return uri[len("file:") :]


def _holds_code(text: str) -> bool:
    if text.endswith("/"):
        return True
    path = Path(text)
    name = path.name
    if PurePosixPath(name).suffix in CODE_SUFFIXES or ".so." in name:
        return True
    if path.is_dir():
        return True
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(_CODE_MAGIC)


def _entries(value: object, key: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError("gramine.syntax", f"{key} is not a list")
    return value


def lint_manifest(text: str, *, imported: Iterable[Path] = ()) -> None:
    """Raise :class:`ManifestError` for the first rule ``text`` breaks (see the table);
    ``imported`` are files the runtime imports (:func:`runtime_imports`), each of which
    must be trusted."""
    if len(text) > MAX_MANIFEST_TEXT:
        raise ManifestError("gramine.syntax", f"the manifest is over {MAX_MANIFEST_TEXT} bytes")
    try:
        manifest = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError("gramine.syntax", f"the manifest is not TOML: {exc}") from None
    for key in _keys(manifest):
        if "insecure__" in key:
            raise ManifestError(
                "gramine.insecure",
                f"the manifest sets {key}: observed an insecure__ key, expected none",
                hint="remove it; an insecure__ option lets the host change what the enclave runs",
            )
    debug = _get(manifest, "sgx.debug")
    if debug is not False:
        raise ManifestError(
            "gramine.debug",
            f"sgx.debug: observed {json.dumps(debug)}, expected false",
            hint="a debug enclave's memory can be read by the host; set sgx.debug = false",
        )
    attestation = _get(manifest, "sgx.remote_attestation")
    if attestation != "dcap":
        raise ManifestError(
            "gramine.attestation",
            f'sgx.remote_attestation: observed {json.dumps(attestation)}, expected "dcap"',
            hint='set sgx.remote_attestation = "dcap"',
        )
    policy = _get(manifest, "sgx.file_check_policy")
    if policy is not None and policy != "strict":
        raise ManifestError(
            "gramine.file_policy",
            f'sgx.file_check_policy: observed {json.dumps(policy)}, expected "strict"',
            hint="any other policy lets the enclave open files that are neither trusted nor "
            "allowed",
        )
    argv = _get(manifest, "loader.argv")
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or _get(manifest, "loader.argv_src_file") is not None
    ):
        raise ManifestError(
            "gramine.argv",
            "loader.argv: observed no fixed list of strings, expected the runtime's fixed argv",
            hint="generate the manifest with confide gramine manifest",
        )
    env = _get(manifest, "loader.env") or {}
    if _get(manifest, "loader.env_src_file") is not None:
        raise ManifestError(
            "gramine.env", "loader.env_src_file takes the environment from the host"
        )
    for name, value in env.items() if isinstance(env, dict) else ():
        if isinstance(value, str):
            continue
        # Only where the runtime listens may come from the host (ADR 0011: unmeasured,
        # harmless); the runtime reads these two variables for nothing else.
        if name in PASSTHROUGH_ENV and value == {"passthrough": True}:
            continue
        raise ManifestError(
            "gramine.env",
            f"loader.env.{name}: observed a value from the host, expected a fixed string"
            f" (only {' and '.join(PASSTHROUGH_ENV)} may be passed through)",
        )
    for mount in _entries(_get(manifest, "fs.mounts"), "fs.mounts"):
        if isinstance(mount, dict) and mount.get("type") == "encrypted":
            key_name = mount.get("key_name")
            if key_name != "_sgx_mrenclave":
                raise ManifestError(
                    "gramine.sealing_key",
                    f"the encrypted mount {mount.get('path')}: observed key "
                    f'{json.dumps(key_name)}, expected "_sgx_mrenclave"',
                    hint="state must open only in an enclave with this same measurement",
                )
    for entry in _entries(_get(manifest, "sgx.allowed_files"), "sgx.allowed_files"):
        path = _uri_path(entry)
        if path is None or _holds_code(path):
            raise ManifestError(
                "gramine.allowed_code",
                f"sgx.allowed_files holds {json.dumps(entry)}: observed a file that can hold "
                "code, expected data only",
                hint="make it a trusted file (hashed into the measurement)",
            )
    trusted_files: set[str] = set()
    trusted_folders: list[str] = []
    for entry in _entries(_get(manifest, "sgx.trusted_files"), "sgx.trusted_files"):
        path = _uri_path(entry)
        if path is None:
            raise ManifestError("gramine.syntax", f"a trusted file is not a file: URI: {entry!r}")
        if path.endswith("/"):
            trusted_folders.append(os.path.abspath(path) + "/")
        else:
            trusted_files.add(os.path.abspath(path))
    for file in imported:
        name = os.path.abspath(file)
        if name not in trusted_files and not any(name.startswith(f) for f in trusted_folders):
            raise ManifestError(
                "gramine.untrusted_import",
                f"the runtime imports {name}: observed a file that is not trusted, "
                "expected every imported file in sgx.trusted_files",
                hint="declare the distribution it belongs to as a requirement of the app",
            )


_PROBE: Final = """
import json, sys
sys.path[:] = json.loads(sys.argv[1])
import importlib
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
files = set()
for module in list(sys.modules.values()):
    for where in (getattr(module, "__file__", None),
                  getattr(getattr(module, "__spec__", None), "origin", None)):
        if isinstance(where, str) and where not in ("built-in", "frozen"):
            files.add(where)
print(json.dumps(sorted(files)))
"""


def imported_files(
    interpreter: Path, python_path: Sequence[Path], modules: Sequence[str] = RUNTIME_MODULES
) -> list[Path]:
    """The files of every module loaded when ``interpreter``, isolated (``-I -S``) with
    ``python_path`` as its whole path, imports ``modules``; symlinks resolved."""
    argv = [
        str(interpreter),
        "-I",
        "-S",
        "-c",
        _PROBE,
        json.dumps([str(p) for p in python_path]),
        json.dumps(list(modules)),
    ]
    try:
        done = subprocess.run(  # noqa: S603 - the manifest's interpreter, our probe, no shell
            argv, capture_output=True, text=True, timeout=_IMPORT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run the runtime's imports with {interpreter}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"the runtime's imports fail in its environment: {last}")
    try:
        found = json.loads(done.stdout)
    except ValueError:
        raise UsageError("the import probe did not answer JSON") from None
    if not isinstance(found, list) or len(found) > MAX_IMPORTED:
        raise UsageError("the import probe answered nonsense")
    return [Path(os.path.realpath(str(f))) for f in found]


def runtime_imports(
    environment: RuntimeEnvironment, modules: Sequence[str] = RUNTIME_MODULES
) -> list[Path]:
    """:func:`imported_files` with ``environment``'s interpreter and path."""
    return imported_files(environment.interpreter, environment.python_path, modules)
