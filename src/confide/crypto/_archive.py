"""A deterministic tar archive of an app folder, and a strict extractor for it.

Writing: a POSIX (pax) tar of the folder's directories and regular files,
depth first with the names of each directory sorted by their UTF-8 bytes, with
fixed metadata: mtime 0, uid and gid 0, no user or group names, mode 0755 for
directories and executable files and 0644 for other files. The same folder
always gives the same bytes. Symlinks and special files are refused (ignore
them, see :mod:`._ignore`), as are names that are not UTF-8.

Reading accepts only what such an archive may hold, and refuses everything
else by raising :class:`CryptoError`: absolute paths, ``..`` or ``.`` or empty
components, symlinks, hard links, devices, FIFOs, sparse or GNU long-name
entries, global pax headers, unknown pax keys, duplicate entries, an entry
before its directory, bad checksums, data after the end marker, and more
entries, bytes or path length than :class:`ArchiveLimits` allows. It extracts
into a fresh private directory beside the target and renames it into place
only once the whole archive was read, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, cast

from confide.errors import UsageError

from ._errors import CryptoError
from ._ignore import IgnoreRules
from ._stream import Reader, Writer, read_exact

#: Most entries (files and directories) in a package.
MAX_ENTRIES: Final = 100_000
#: Most bytes of file content in a package.
MAX_TOTAL_SIZE: Final = 4 * 1024**3
#: Longest entry path, in UTF-8 bytes.
MAX_PATH_BYTES: Final = 4096
#: Most directories an entry path may go down.
MAX_DEPTH: Final = 64
_MAX_NAME_BYTES: Final = 255
_MAX_PAX_SIZE: Final = 64 * 1024
_MAX_END_PADDING: Final = 1024 * 1024
_BLOCK: Final = tarfile.BLOCKSIZE
_COPY: Final = 64 * 1024
_FILE_MODE: Final = 0o644
_EXEC_MODE: Final = 0o755
_DIR_MODE: Final = 0o755
_POSIX_MAGIC: Final = b"ustar\x0000"
_IGNORED_PAX_KEYS: Final = frozenset(
    {"mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment", "linkpath"}
)
_TYPE_NAMES: Final = {
    b"1": "a hard link",
    b"2": "a symlink",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a global pax header",
    b"L": "a GNU long name",
    b"K": "a GNU long link name",
    b"S": "a sparse file",
}


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds on what an archive may hold; the defaults are the named constants."""

    max_entries: int = MAX_ENTRIES
    max_total_size: int = MAX_TOTAL_SIZE
    max_path_bytes: int = MAX_PATH_BYTES
    max_depth: int = MAX_DEPTH


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One entry of an archive: a directory or a regular file."""

    path: str
    is_dir: bool
    size: int = 0
    executable: bool = False

    @property
    def mode(self) -> int:
        return _DIR_MODE if self.is_dir else (_EXEC_MODE if self.executable else _FILE_MODE)


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What an archive held: counts of files and directories, and bytes of content."""

    files: int
    directories: int
    total_size: int

    @property
    def entries(self) -> int:
        return self.files + self.directories


def _fail(code: str, message: str) -> CryptoError:
    return CryptoError(f"archive.{code}", message)


def _check_path(path: str, limits: ArchiveLimits, *, packaging: bool = False) -> None:
    """Refuse a path that is not a plain relative path within the limits."""

    def bad(code: str, why: str) -> Exception:
        if packaging:
            return UsageError(f"cannot package {path!r}: it {why}")
        return _fail(code, f"archive entry {path!r} {why}")

    if not path:
        raise bad("path", "has an empty name")
    if "\x00" in path:
        raise bad("path", "has a NUL character in its name")
    if path.startswith("/"):
        raise bad("path", "is an absolute path")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > limits.max_path_bytes:
        raise bad("limit", f"has a {size}-byte path, more than the {limits.max_path_bytes} allowed")
    parts = path.split("/")
    if len(parts) > limits.max_depth:
        raise bad("limit", f"is {len(parts)} levels deep, more than the {limits.max_depth} allowed")
    for part in parts:
        if part in ("", ".", ".."):
            raise bad("path", f"has a {part or 'empty'!r} component")
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
            raise bad("limit", f"has a name longer than {_MAX_NAME_BYTES} bytes")


# -- writing ---------------------------------------------------------------------------------


def collect_entries(
    app_dir: Path, *, rules: IgnoreRules | None = None, limits: ArchiveLimits | None = None
) -> tuple[ArchiveEntry, ...]:
    """The entries of ``app_dir`` that go into its archive, in archive order."""
    limits = limits or ArchiveLimits()
    if not app_dir.is_dir():
        raise UsageError(f"{app_dir} is not a directory")
    rules = rules if rules is not None else IgnoreRules.from_directory(app_dir)
    entries: list[ArchiveEntry] = []
    total = 0

    def walk(directory: Path, prefix: str) -> None:
        nonlocal total
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise UsageError(f"cannot list {directory}: {exc.strerror or exc}") from None
        for child in children:
            try:
                child.name.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(f"cannot package {child.path!r}: its name is not UTF-8") from None
            rel = prefix + child.name
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise UsageError(f"cannot stat {child.path}: {exc.strerror or exc}") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules.ignores(rel, is_dir=is_dir):
                continue
            if not is_dir and not stat.S_ISREG(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise UsageError(
                    f"cannot package {rel!r}: it is {kind}",
                    hint="packages hold directories and regular files; list it in .confideignore",
                )
            _check_path(rel, limits, packaging=True)
            if len(entries) >= limits.max_entries:
                raise UsageError(f"{app_dir} holds more than {limits.max_entries} entries")
            if is_dir:
                entries.append(ArchiveEntry(rel, is_dir=True))
                walk(Path(child.path), rel + "/")
            else:
                total += st.st_size
                if total > limits.max_total_size:
                    raise UsageError(
                        f"{app_dir} holds more than {limits.max_total_size} bytes of files"
                    )
                entries.append(
                    ArchiveEntry(
                        rel, is_dir=False, size=st.st_size, executable=bool(st.st_mode & 0o100)
                    )
                )

    walk(app_dir, "")
    return tuple(entries)


def _tarinfo(entry: ArchiveEntry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.size = size
    info.mode = entry.mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(
    app_dir: Path,
    dst: Writer,
    *,
    rules: IgnoreRules | None = None,
    limits: ArchiveLimits | None = None,
) -> ArchiveSummary:
    """Write the deterministic archive of ``app_dir`` to ``dst`` (streamed)."""
    limits = limits or ArchiveLimits()
    entries = collect_entries(app_dir, rules=rules, limits=limits)
    files = total = 0
    # tarfile's stream mode ("w|") only ever calls write() on its file object.
    with tarfile.open(
        fileobj=cast("IO[bytes]", dst),
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="strict",
    ) as tar:
        for entry in entries:
            if entry.is_dir:
                tar.addfile(_tarinfo(entry, 0))
                continue
            path = app_dir / entry.path
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(fd).st_size
                if not stat.S_ISREG(os.fstat(fd).st_mode) or size != entry.size:
                    raise UsageError(f"{path} changed while it was being packaged; try again")
                try:
                    tar.addfile(_tarinfo(entry, size), f)
                except OSError as exc:
                    raise UsageError(f"{path} changed while it was being packaged: {exc}") from None
                if f.read(1):
                    raise UsageError(f"{path} grew while it was being packaged; try again")
            files += 1
            total += size
    return ArchiveSummary(files=files, directories=len(entries) - files, total_size=total)


# -- reading ---------------------------------------------------------------------------------


def _octal(field: bytes, what: str, where: str) -> int:
    text = field.rstrip(b"\x00 ").lstrip(b" ")
    if not text:
        return 0
    if not all(0x30 <= c <= 0x37 for c in text):
        raise _fail("format", f"{where}: the {what} field is not an octal number")
    return int(text, 8)


def _text(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _parse_pax(data: bytes, where: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        digits = data[pos:space] if space > pos else b""
        if not digits or not digits.isdigit():
            raise _fail("format", f"{where}: a pax record has no length")
        length = int(digits)
        record = data[pos : pos + length]
        if length <= len(digits) + 1 or len(record) != length or not record.endswith(b"\n"):
            raise _fail("format", f"{where}: a pax record is malformed")
        key, eq, value = record[len(digits) + 1 : -1].partition(b"=")
        if not eq:
            raise _fail("format", f"{where}: a pax record has no '='")
        try:
            records[key.decode("ascii")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("format", f"{where}: a pax record is not UTF-8") from None
        pos += length
    return records


@dataclass(frozen=True, slots=True)
class _Header:
    path: str
    type: bytes
    size: int
    mode: int


def _parse_header(block: bytes, pax: dict[str, str], index: int) -> _Header:
    where = f"archive entry {index}"
    stored = _octal(block[148:156], "checksum", where)
    if stored != sum(block[:148]) + 8 * 0x20 + sum(block[156:]):
        raise _fail("format", f"{where}: the header checksum does not match")
    if block[257:265] != _POSIX_MAGIC:
        raise _fail("format", f"{where}: not a POSIX ustar header")
    typeflag = block[156:157]
    name_field, prefix = _text(block[0:100]), _text(block[345:500])
    raw_name = prefix + b"/" + name_field if prefix else name_field
    try:
        name = pax["path"] if "path" in pax else raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("path", f"{where}: its name is not UTF-8") from None
    if "size" in pax:
        if not pax["size"].isdigit():
            raise _fail("format", f"{where}: the pax size is not a number")
        size = int(pax["size"])
    else:
        size = _octal(block[124:136], "size", where)
    return _Header(name, typeflag, size, _octal(block[100:108], "mode", where))


class _Extractor:
    def __init__(self, src: Reader, root: Path, limits: ArchiveLimits) -> None:
        self.src = src
        self.root = root
        self.limits = limits
        self.kinds: dict[str, bool] = {}  # path -> is_dir
        self.files = 0
        self.total = 0

    def block(self, index: int) -> bytes:
        block = read_exact(self.src, _BLOCK)
        if len(block) != _BLOCK:
            raise _fail("truncated", f"the archive ends inside entry {index}'s header")
        return block

    def data(self, size: int, index: int) -> bytes:
        data = read_exact(self.src, size)
        if len(data) != size:
            raise _fail("truncated", f"the archive ends inside entry {index}'s data")
        self.skip_padding(size, index)
        return data

    def skip_padding(self, size: int, index: int) -> None:
        pad = -size % _BLOCK
        if pad and len(read_exact(self.src, pad)) != pad:
            raise _fail("truncated", f"the archive ends inside entry {index}'s padding")

    def run(self) -> ArchiveSummary:
        index = 0
        pax: dict[str, str] | None = None  # the records of a pax header waiting for its entry
        while True:
            block = self.block(index)
            if not any(block):
                if pax is not None:
                    raise _fail("format", "a pax header is not followed by an entry")
                self.finish()
                return ArchiveSummary(self.files, len(self.kinds) - self.files, self.total)
            header = _parse_header(block, pax or {}, index)
            if header.type != tarfile.XHDTYPE:
                pax = None
                self.entry(header, index)
                index += 1
                continue
            if pax is not None:
                raise _fail("format", f"archive entry {index}: two pax headers in a row")
            if header.size > _MAX_PAX_SIZE:
                raise _fail(
                    "limit",
                    f"archive entry {index}: a {header.size}-byte pax header, more than "
                    f"the {_MAX_PAX_SIZE} allowed",
                )
            pax = _parse_pax(self.data(header.size, index), f"archive entry {index}")
            for key in pax:
                if key not in _IGNORED_PAX_KEYS and key not in ("path", "size"):
                    raise _fail("format", f"archive entry {index}: unsupported pax key {key!r}")

    def entry(self, header: _Header, index: int) -> None:
        path = header.path
        is_dir = header.type == tarfile.DIRTYPE
        if is_dir:
            path = path[:-1] if path.endswith("/") else path
        elif header.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = _TYPE_NAMES.get(header.type, f"of unknown type {header.type!r}")
            raise _fail("type", f"archive entry {path!r} is {kind}; only files and directories")
        _check_path(path, self.limits)
        if path in self.kinds:
            raise _fail("duplicate", f"archive entry {path!r} appears twice")
        parent = path.rpartition("/")[0]
        if parent and self.kinds.get(parent) is not True:
            raise _fail(
                "order", f"archive entry {path!r} comes before its directory entry {parent!r}"
            )
        if len(self.kinds) >= self.limits.max_entries:
            raise _fail("limit", f"the archive holds more than {self.limits.max_entries} entries")
        self.kinds[path] = is_dir
        target = self.root / path
        if is_dir:
            if header.size:
                raise _fail("format", f"directory entry {path!r} has a size of {header.size}")
            self.mkdir(target)
            return
        self.total += header.size
        if self.total > self.limits.max_total_size:
            raise _fail(
                "limit",
                f"the archive holds more than {self.limits.max_total_size} bytes of files",
            )
        mode = _EXEC_MODE if header.mode & 0o111 else _FILE_MODE
        self.write_file(target, header.size, mode, index)
        self.files += 1

    def mkdir(self, target: Path) -> None:
        try:
            os.mkdir(target, _DIR_MODE)
            os.chmod(target, _DIR_MODE)
        except OSError as exc:
            raise UsageError(f"cannot create {target}: {exc.strerror or exc}") from None

    def write_file(self, target: Path, size: int, mode: int, index: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, mode)
        except OSError as exc:
            raise UsageError(f"cannot create {target}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)
            left = size
            while left:
                data = self.src.read(min(left, _COPY))
                if not data:
                    raise _fail("truncated", f"the archive ends inside entry {index}'s data")
                try:
                    f.write(data)
                except OSError as exc:
                    raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
                left -= len(data)
        self.skip_padding(size, index)

    def finish(self) -> None:
        second = read_exact(self.src, _BLOCK)
        if len(second) != _BLOCK or any(second):
            raise _fail("format", "the archive's end marker is not two zero blocks")
        seen = 0
        while data := self.src.read(_COPY):
            seen += len(data)
            if any(data) or seen > _MAX_END_PADDING:
                raise _fail("trailing", "the archive has data after its end marker")


def extract_archive(
    src: Reader, out_dir: Path, *, limits: ArchiveLimits | None = None
) -> ArchiveSummary:
    """Extract the archive read from ``src`` into ``out_dir``, which must not exist yet.

    Reads ``src`` to its end (so a decrypting reader authenticates the whole
    stream) before ``out_dir`` appears; on any failure nothing is left.
    """
    limits = limits or ArchiveLimits()
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() or out_dir.is_symlink():
        raise UsageError(f"{out_dir} already exists; give a new directory to extract into")
    if not out_dir.parent.is_dir():
        raise UsageError(f"{out_dir.parent} is not a directory")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise UsageError(
            f"cannot create a directory in {out_dir.parent}: {exc.strerror or exc}"
        ) from None
    try:
        summary = _Extractor(src, staging, limits).run()
        try:
            os.rename(staging, out_dir)
        except OSError as exc:
            raise UsageError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
