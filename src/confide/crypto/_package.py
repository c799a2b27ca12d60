"""Code packages: the deterministic archive of an app folder, encrypted as one stream.

Example::

    >>> import io, pathlib, tempfile
    >>> from confide.crypto import PackageKey, decrypt_package, encrypt_package, package_digest
    >>> app = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (app / "app.py").write_text("print('hi')\\n")
    >>> key = PackageKey.generate()
    >>> package = io.BytesIO()
    >>> info = encrypt_package(app, package, key)
    >>> info.digest == package_digest(io.BytesIO(package.getvalue()))
    True
    >>> _ = package.seek(0)
    >>> decrypt_package(package, app.parent / (app.name + ".out"), key).files
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._archive import ArchiveLimits, ArchiveSummary, extract_archive, write_archive
from ._ignore import IgnoreRules
from ._keys import PackageKey
from ._stream import DecryptingReader, EncryptingWriter, HashingWriter, Reader, Writer


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """What :func:`encrypt_package` wrote: the package's SHA-256, size and contents."""

    digest: bytes
    size: int
    archive: ArchiveSummary

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


def encrypt_package(
    app_dir: Path,
    dst: Writer,
    key: PackageKey,
    *,
    rules: IgnoreRules | None = None,
    limits: ArchiveLimits | None = None,
) -> PackageInfo:
    """Archive ``app_dir`` and encrypt it into ``dst``, streamed; no plaintext touches disk.

    ``rules`` defaults to the folder's ``.confideignore`` / ``.mseignore``.
    """
    hashing = HashingWriter(dst)
    writer = EncryptingWriter(hashing, key)
    summary = write_archive(app_dir, writer, rules=rules, limits=limits)
    writer.close()
    return PackageInfo(digest=hashing.digest(), size=hashing.size, archive=summary)


def decrypt_package(
    src: Reader, out_dir: Path, key: PackageKey, *, limits: ArchiveLimits | None = None
) -> ArchiveSummary:
    """Decrypt a package from ``src`` and extract it into ``out_dir`` (which must not exist).

    The plaintext archive is never written anywhere; ``out_dir`` appears only
    once the whole package was authenticated and extracted.
    """
    return extract_archive(DecryptingReader(src, key), out_dir, limits=limits)
