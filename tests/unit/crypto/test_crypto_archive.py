"""Code packages: deterministic archives, round trips, ignore files, hostile archives."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.crypto import (
    ArchiveLimits,
    CryptoError,
    PackageKey,
    collect_entries,
    decrypt_package,
    decrypt_stream,
    encrypt_package,
    encrypt_stream,
    extract_archive,
    package_digest,
    write_archive,
)
from confide.errors import UsageError

KEY = PackageKey(bytes(range(32)))


def make_tree(root: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root: file contents, or None for a directory."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def archive_bytes(app: Path) -> bytes:
    out = io.BytesIO()
    write_archive(app, out)
    return out.getvalue()


def round_trip(app: Path, out: Path) -> None:
    pkg = io.BytesIO()
    info = encrypt_package(app, pkg, KEY)
    assert info.digest == package_digest(io.BytesIO(pkg.getvalue()))
    assert info.size == len(pkg.getvalue())
    pkg.seek(0)
    summary = decrypt_package(pkg, out, KEY)
    assert summary == info.archive


# -- round trips and determinism -------------------------------------------------------------

_NAME = st.text(alphabet=st.sampled_from("abcXYZ019-_.é ü"), min_size=1, max_size=10).filter(
    lambda n: n not in (".", "..") and not n.startswith(".confide") and n != ".mseignore"
)


@st.composite
def trees(draw: st.DrawFn) -> tuple[dict[str, bytes], tuple[str, ...]]:
    paths = draw(st.lists(st.lists(_NAME, min_size=1, max_size=4), max_size=12))
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for parts in paths:
        path = "/".join(parts)
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if path in dirs or path in files or prefixes & files.keys():
            continue
        if any(f.startswith(path + "/") for f in files):
            continue
        files[path] = draw(st.binary(max_size=3000))
        dirs |= prefixes
    empty = draw(st.lists(_NAME, max_size=2))
    return files, tuple(d for d in empty if d not in files and d not in dirs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_any_tree_round_trips(tree: tuple[dict[str, bytes], tuple[str, ...]]) -> None:
    files, empty_dirs = tree
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp, "app")
        app.mkdir()
        make_tree(app, files, empty_dirs)
        round_trip(app, Path(tmp, "out"))
        assert read_tree(Path(tmp, "out")) == read_tree(app)


def test_archive_is_deterministic(tmp_path: Path) -> None:
    files = {"b.py": b"b", "a/x.py": b"x" * 700, "a/é.txt": b"u", "c" * 150: b"long name"}
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one, files, ("empty",))
    # The same content made in another order, with other times, modes and umask.
    make_tree(two, dict(reversed(list(files.items()))), ("empty",))
    os.utime(two / "b.py", (1, 1))
    (one / "b.py").chmod(0o600)
    (two / "b.py").chmod(0o664)
    assert archive_bytes(one) == archive_bytes(two)
    assert archive_bytes(one) == archive_bytes(one)


def test_archive_metadata_is_fixed(tmp_path: Path) -> None:
    make_tree(tmp_path, {"run.sh": b"#!/bin/sh\n", "lib/m.py": b"m"}, ("z",))
    (tmp_path / "run.sh").chmod(0o700)
    members = tarfile.open(fileobj=io.BytesIO(archive_bytes(tmp_path))).getmembers()
    assert [m.name for m in members] == ["lib", "lib/m.py", "run.sh", "z"]
    assert [oct(m.mode) for m in members] == ["0o755", "0o644", "0o755", "0o755"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")


def test_extracted_modes_are_normalized(tmp_path: Path) -> None:
    app = tmp_path / "app"
    make_tree(app, {"run.sh": b"x", "data.txt": b"y"})
    (app / "run.sh").chmod(0o744)
    round_trip(app, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out/data.txt").stat().st_mode) == 0o644


def test_two_packages_of_one_folder_differ_only_by_their_nonce(tmp_path: Path) -> None:
    make_tree(tmp_path / "app", {"a.py": b"a" * 100_000})
    one, two = io.BytesIO(), io.BytesIO()
    encrypt_package(tmp_path / "app", one, KEY)
    encrypt_package(tmp_path / "app", two, KEY)
    assert len(one.getvalue()) == len(two.getvalue())
    assert one.getvalue() != two.getvalue()
    # Same plaintext archive inside (the stream tests show the ciphertext is then fixed).
    plain = [io.BytesIO(), io.BytesIO()]
    for src, dst in zip((one, two), plain, strict=True):
        src.seek(0)
        decrypt_stream(src, dst, KEY)
    assert plain[0].getvalue() == plain[1].getvalue() == archive_bytes(tmp_path / "app")


# -- ignore files ----------------------------------------------------------------------------


def test_ignore_files_are_honoured(tmp_path: Path) -> None:
    app = tmp_path / "app"
    make_tree(
        app,
        {
            ".confideignore": b"*.log\n!keep.log\n/build/\nsecrets/\n# comment\n",
            ".mseignore": b"*.tmp\n",
            "main.py": b"m",
            "x.log": b"l",
            "sub/y.log": b"l",
            "keep.log": b"k",
            "build/out.bin": b"b",
            "sub/build/kept.py": b"k",
            "secrets/key.pem": b"s",
            "a.tmp": b"t",
            "__pycache__/main.cpython-311.pyc": b"c",
            "sub/__pycache__/x.pyc": b"c",
            ".git/HEAD": b"ref",
        },
    )
    paths = [e.path for e in collect_entries(app)]
    assert paths == ["keep.log", "main.py", "sub", "sub/build", "sub/build/kept.py"]


def test_symlinks_are_refused_unless_ignored(tmp_path: Path) -> None:
    app = tmp_path / "app"
    make_tree(app, {"main.py": b"m"})
    (app / "link").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="'link': it is a symlink"):
        collect_entries(app)
    (app / ".confideignore").write_text("link\n")
    assert [e.path for e in collect_entries(app)] == ["main.py"]


def test_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UsageError, match="not a regular file"):
        collect_entries(tmp_path)


def test_packaging_respects_limits(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": b"1234", "b": b"5678"})
    with pytest.raises(UsageError, match="more than 1 entries"):
        collect_entries(tmp_path, limits=ArchiveLimits(max_entries=1))
    with pytest.raises(UsageError, match="more than 6 bytes"):
        collect_entries(tmp_path, limits=ArchiveLimits(max_total_size=6))


# -- hostile archives ------------------------------------------------------------------------


def _tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _entry(name: str, kind: bytes, **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, b""


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return _entry(name, tarfile.DIRTYPE, mode=0o755)


def _with_pax(key: str) -> bytes:
    info, data = _file("a")
    info.pax_headers = {key: "1"}
    return _tar((info, data))


def _patched(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def _header_patched(data: bytes, at: int, value: bytes) -> bytes:
    """Patch the first header and give it a valid checksum again."""
    block = bytearray(_patched(data, at, value)[:512])
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block) + data[512:]


def _huge_pax() -> bytes:
    info, data = _file("a")
    info.pax_headers = {"comment": "c" * 70_000}
    return _tar((info, data))


HOSTILE: list[tuple[str, Callable[[], bytes], str]] = [
    ("absolute path", lambda: _tar(_file("/etc/passwd")), "archive.path"),
    ("parent directory", lambda: _tar(_file("../evil")), "archive.path"),
    ("parent inside", lambda: _tar(_dir("a"), _file("a/../../evil")), "archive.path"),
    ("dot component", lambda: _tar(_file("./a")), "archive.path"),
    ("empty component", lambda: _tar(_dir("a"), _file("a//b")), "archive.path"),
    ("symlink", lambda: _tar(_entry("l", tarfile.SYMTYPE, linkname="/etc")), "archive.type"),
    (
        "hard link",
        lambda: _tar(_file("a"), _entry("h", tarfile.LNKTYPE, linkname="a")),
        "archive.type",
    ),
    ("character device", lambda: _tar(_entry("c", tarfile.CHRTYPE)), "archive.type"),
    ("block device", lambda: _tar(_entry("b", tarfile.BLKTYPE)), "archive.type"),
    ("FIFO", lambda: _tar(_entry("f", tarfile.FIFOTYPE)), "archive.type"),
    ("contiguous file", lambda: _tar(_entry("c", tarfile.CONTTYPE)), "archive.type"),
    ("global pax header", lambda: _tar(_entry("g", tarfile.XGLTYPE)), "archive.type"),
    ("duplicate file", lambda: _tar(_file("a"), _file("a")), "archive.duplicate"),
    ("file then directory", lambda: _tar(_file("a"), _dir("a")), "archive.duplicate"),
    ("entry before its directory", lambda: _tar(_file("a/b")), "archive.order"),
    ("entry under a file", lambda: _tar(_file("a"), _file("a/b")), "archive.order"),
    ("GNU long name", lambda: _tar(_file("n" * 120), fmt=tarfile.GNU_FORMAT), "archive.format"),
    ("unknown pax key", lambda: _with_pax("SCHILY.xattr.user.x"), "archive.format"),
    ("sparse pax key", lambda: _with_pax("GNU.sparse.size"), "archive.format"),
    ("huge pax header", _huge_pax, "archive.limit"),
    ("bad checksum", lambda: _patched(_tar(_file("a")), 0, b"b"), "archive.format"),
    ("non-octal size", lambda: _header_patched(_tar(_file("a")), 124, b"9"), "archive.format"),
    ("not ustar", lambda: _header_patched(_tar(_file("a")), 257, b"nope"), "archive.format"),
    (
        "directory with data",
        lambda: _header_patched(_tar(_dir("d")), 124, b"00000000001"),
        "archive.format",
    ),
    ("no end marker", lambda: _tar(_file("a", b"x" * 60))[:1024], "archive.truncated"),
    ("cut inside a file", lambda: _tar(_file("a", b"x" * 90))[:560], "archive.truncated"),
    ("cut inside a header", lambda: _tar(_file("a"))[:100], "archive.truncated"),
    (
        "one zero block then data",
        lambda: _tar(_file("a"))[:1024] + bytes(512) + b"\x01" * 512,
        "archive.format",
    ),
    ("data after the end marker", lambda: _tar(_file("a")) + b"junk", "archive.trailing"),
    ("too many entries", lambda: _tar(*(_file(f"f{i}") for i in range(5))), "archive.limit"),
    ("too many bytes", lambda: _tar(_file("a", b"x" * 101)), "archive.limit"),
    ("too deep", lambda: _tar(*(_dir("/".join("d" * (i + 1))) for i in range(5))), "archive.limit"),
    ("name not UTF-8", lambda: _header_patched(_tar(_file("ab")), 0, b"\xff"), "archive.path"),
]
LIMITS = ArchiveLimits(max_entries=4, max_total_size=100, max_depth=4)


@pytest.mark.parametrize(("name", "make", "code"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_archives_are_refused(
    tmp_path: Path, name: str, make: Callable[[], bytes], code: str
) -> None:
    pkg = io.BytesIO()
    encrypt_stream(io.BytesIO(make()), pkg, KEY)
    pkg.seek(0)
    out = tmp_path / "out"
    with pytest.raises(CryptoError) as info:
        decrypt_package(pkg, out, KEY, limits=LIMITS)
    assert info.value.code == code, str(info.value)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == [], "nothing is left behind"


def test_an_escaping_path_writes_nothing_outside(tmp_path: Path) -> None:
    tar = _tar(_file("ok", b"fine"), _file("../escaped", b"evil"))
    with pytest.raises(CryptoError):
        extract_archive(io.BytesIO(tar), tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
    assert list(tmp_path.iterdir()) == []


def test_extraction_refuses_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        extract_archive(io.BytesIO(_tar(_file("a"))), tmp_path / "out")


def test_a_truncated_package_leaves_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app"
    make_tree(app, {"big.bin": os.urandom(300_000)})
    pkg = io.BytesIO()
    encrypt_package(app, pkg, KEY)
    cut = io.BytesIO(pkg.getvalue()[:-30])
    with pytest.raises(CryptoError, match="truncated"):
        decrypt_package(cut, tmp_path / "out", KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 3071), st.binary(min_size=1, max_size=8))
def test_archive_reader_fails_closed(noise: bytes, at: int, patch: bytes) -> None:
    """Random bytes or a damaged archive: extraction succeeds inside out, or raises our error."""
    base = _tar(_dir("d"), _file("d/f", b"hello"), _file("g", b"x" * 700))
    for data in (noise, _patched(base, at, patch)):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp, "out")
            try:
                extract_archive(io.BytesIO(data), out)
            except CryptoError:
                assert os.listdir(tmp) == []
                continue
            for path in out.rglob("*"):
                assert path.resolve().is_relative_to(out.resolve())
                assert path.is_dir() or (path.is_file() and not path.is_symlink())


def test_names_and_sizes_do_not_show(tmp_path: Path) -> None:
    app = tmp_path / "app"
    make_tree(app, {"very_distinctive_module_name.py": b"A" * 5000, "tiny": b"B"})
    pkg = io.BytesIO()
    encrypt_package(app, pkg, KEY)
    data = pkg.getvalue()
    assert b"very_distinctive" not in data
    assert b"AAAA" not in data
    assert (len(data) - 66 - 25) % (64 * 1024 + 17) == 0, "only whole chunks show"


def test_package_round_trip_runs_in_constant_memory(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    with (app / "big.bin").open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(40):
            f.write(block)
    pkg = tmp_path / "app.pkg"
    tracemalloc.start()
    try:
        with pkg.open("wb") as f:
            encrypt_package(app, f, KEY)
        with pkg.open("rb") as f:
            decrypt_package(f, tmp_path / "out", KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out/big.bin").stat().st_size == 40 << 20
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
