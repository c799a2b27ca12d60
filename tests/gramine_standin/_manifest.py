"""Gramine manifests as the stand-ins read them (Gramine's "Manifest syntax" page).

- ``sgx.trusted_files`` entries are ``"file:URI"`` strings or ``{uri, sha256}`` tables;
  a URI ending in ``/`` is a directory, expanded recursively into its files by the
  signer; a table's ``sha256`` is taken as given (the signer does not re-hash it).
- ``sgx.allowed_files`` entries are ``file:`` (or ``dev:``) URIs, a directory when
  ending in ``/``.
- ``fs.mounts`` entries are ``{type, path, uri}``; ``type`` defaults to ``chroot``.
- The expanded manifest (``.manifest.sgx``) lists every trusted file as a table with
  its ``sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: Largest manifest read.
MAX_MANIFEST: Final = 16 * 1024 * 1024
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_CHUNK: Final = 1 << 20
#: The variable naming the stand-ins' hash cache file (set by their launchers).
CACHE_VARIABLE: Final = "CONFIDE_GRAMINE_STANDIN_CACHE"


class ManifestError(Exception):
    """The manifest is not one Gramine would sign or run; the message says why."""


def read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST:
        raise ManifestError(f"{path} is larger than {MAX_MANIFEST} bytes")
    text = raw.decode("utf-8")
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path} is not TOML: {exc}") from None


def uri_path(uri: object, *, prefix: str = "file:") -> Path:
    if not isinstance(uri, str) or not uri.startswith(prefix):
        raise ManifestError(f"Unsupported URI type: {uri!r} (expected {prefix}...)")
    return Path(uri[len(prefix) :])


def sha256_file(path: Path, cache: HashCache | None = None) -> str:
    if cache is not None:
        known = cache.get(path)
        if known is not None:
            return known
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if cache is not None:
        cache.put(path, digest.hexdigest())
    return digest.hexdigest()


class HashCache:
    """Hashes remembered by each file's stat (device, inode, size, mtime, ctime), on disk.

    A speed-up of the stand-ins only (Gramine's signer hashes every time): a file
    written since keeps no entry, since writing it changes its ctime, which nobody
    can set. The on-open check of ``gramine-sgx``'s loader never uses it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            loaded = {}
        self._entries: dict[str, str] = loaded if isinstance(loaded, dict) else {}
        self._dirty = False

    @staticmethod
    def _key(path: Path) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return f"{path}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"

    def get(self, path: Path) -> str | None:
        key = self._key(path)
        found = self._entries.get(key) if key is not None else None
        return found if isinstance(found, str) and _HEX64.fullmatch(found) else None

    def put(self, path: Path, sha256: str) -> None:
        key = self._key(path)
        if key is not None:
            self._entries[key] = sha256
            self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._entries))
        os.replace(tmp, self.path)


def cache_from_environment() -> HashCache | None:
    """The stand-ins' hash cache, if their launcher names one (``CACHE_VARIABLE``)."""
    where = os.environ.get(CACHE_VARIABLE)
    return HashCache(Path(where)) if where else None


@dataclass(frozen=True, slots=True)
class TrustedFile:
    path: Path
    sha256: str


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root, name)


#: What the stand-in "installs" as Gramine's LibOS where Gramine is not installed.
STANDIN_LIBOS: Final = b"Confide's Gramine stand-in: the host's Python runs instead of a LibOS\n"


def gramine_prefix(manifest: Mapping[str, Any]) -> Path | None:
    """Gramine's library folder (that of ``loader.entrypoint``), when the manifest names one."""
    uri = manifest.get("loader", {}).get("entrypoint", {}).get("uri")
    return uri_path(uri).parent if uri else None


def virtual_gramine(manifest: Mapping[str, Any]) -> Path | None:
    """Gramine's folder when it is not installed here: the stand-in then plays it.

    Its LibOS is :data:`STANDIN_LIBOS` and its glibc folder is empty (the host's
    glibc runs): so the operator writes the same manifest as on an SGX host, with
    Gramine's default paths, and an owner's prediction renders the same one.
    """
    prefix = gramine_prefix(manifest)
    return prefix if prefix is not None and not prefix.exists() else None


def libos_sha256(manifest: Mapping[str, Any], cache: HashCache | None = None) -> str:
    libos = uri_path(manifest["loader"]["entrypoint"].get("uri"))
    if virtual_gramine(manifest) is not None:
        return hashlib.sha256(STANDIN_LIBOS).hexdigest()
    try:
        return sha256_file(libos, cache)
    except OSError as exc:
        raise ManifestError(f"cannot hash loader.entrypoint {libos}: {exc.strerror}") from None


def expand_trusted(
    manifest: Mapping[str, Any], cache: HashCache | None = None
) -> list[TrustedFile]:
    """Every trusted file with its hash, as the signer expands them (refusing what it refuses)."""
    virtual = virtual_gramine(manifest)
    sgx = manifest.get("sgx", {})
    entries = sgx.get("trusted_files", [])
    if not isinstance(entries, list):
        raise ManifestError("Unsupported trusted files syntax: sgx.trusted_files must be a list")
    out: list[TrustedFile] = []
    for entry in entries:
        if isinstance(entry, str):
            uri, given = entry, None
        elif isinstance(entry, dict) and set(entry) <= {"uri", "sha256"} and "uri" in entry:
            uri, given = entry["uri"], entry.get("sha256")
        else:
            raise ManifestError(f"Unknown trusted file format: {entry!r}")
        path = uri_path(uri)
        if virtual is not None and path.is_relative_to(virtual):
            continue  # the stand-in's own "installation": nothing of it on disk to trust
        if uri.endswith("/"):
            if given is not None:
                raise ManifestError(f"Directory URI ({uri!r}) has sha256 specified")
            if not path.is_dir():
                raise ManifestError(f"URI {uri!r} ends with '/' but is not a directory")
            out += [TrustedFile(p, sha256_file(p, cache)) for p in _walk(path)]
            continue
        if path.is_dir():
            raise ManifestError(f"Directory URI ({uri!r}) does not end with '/'")
        if given is not None:
            if not isinstance(given, str) or not _HEX64.fullmatch(given):
                raise ManifestError(f"sha256 of {uri!r} is not 64 lower-case hex digits")
            out.append(TrustedFile(path, given))
            continue
        try:
            out.append(TrustedFile(path, sha256_file(path, cache)))
        except OSError as exc:
            raise ManifestError(
                f"cannot hash trusted file {uri!r}: {exc.strerror or exc}"
            ) from None
    return out


def fully_expanded(manifest: Mapping[str, Any]) -> bool:
    """Whether every trusted file already is a table with its hash (nothing to expand)."""
    entries = manifest.get("sgx", {}).get("trusted_files", [])
    return all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and not e["uri"].endswith("/")
        for e in entries
    )


def with_trusted(manifest: Mapping[str, Any], files: list[TrustedFile]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(manifest))  # a deep copy of plain values
    out.setdefault("sgx", {})["trusted_files"] = [
        {"uri": f"file:{f.path}", "sha256": f.sha256} for f in files
    ]
    return out


# -- writing TOML ------------------------------------------------------------------------------


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "".join(f"  {_value(v)},\n" for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise ManifestError(f"cannot write {type(value).__name__} to TOML")


def dumps(manifest: Mapping[str, Any]) -> str:
    """TOML text of a manifest: scalars and arrays first, then one ``[table]`` per table."""
    lines: list[str] = []

    def table(prefix: str, values: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in values.items() if isinstance(v, dict)]
        if prefix and scalars:
            lines.append(f"\n[{prefix}]")
        for k, v in scalars:
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tables:
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", manifest)
    return "\n".join(lines).lstrip("\n") + "\n"


# -- what Gramine would run insecurely ----------------------------------------------------------


def insecure_keys(manifest: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in manifest.items():
        name = f"{prefix}{key}"
        if key.startswith("insecure__"):
            found.append(name)
        if isinstance(value, dict):
            found += insecure_keys(value, name + ".")
    return found


def refuse_insecure(manifest: Mapping[str, Any]) -> None:
    """Refuse what Gramine only warns about: a production launch must not rely on any of it."""
    problems = [f"{k} is set" for k in insecure_keys(manifest)]
    sgx = manifest.get("sgx", {})
    loader = manifest.get("loader", {})
    if sgx.get("debug", False) is not False:
        problems.append("sgx.debug is not false (a debug enclave's memory is not private)")
    if sgx.get("remote_attestation", "none") != "dcap":
        problems.append('sgx.remote_attestation is not "dcap"')
    argv = loader.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        problems.append("loader.argv is not a fixed, non-empty list of strings")
    if "argv_src_file" in loader or "env_src_file" in loader:
        problems.append("arguments or environment come from a file (loader.*_src_file)")
    if sgx.get("file_check_policy", "strict") != "strict":
        problems.append('sgx.file_check_policy is not "strict"')
    if problems:
        raise ManifestError("refusing an insecure manifest: " + "; ".join(problems))
