"""The requirements lock: one canonical spelling, a strict bounded parser, and its place in the
launch manifest (ADR 0024)."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import UsageError
from confide.wire import (
    BUILD,
    MAX_ALLOWED_SDISTS,
    MAX_LOCK_SIZE,
    MAX_LOCKED,
    SDIST,
    LaunchManifest,
    LockedRequirement,
    RequirementsLock,
    TlsMode,
    compatible_platforms,
    normalize_name,
)

HASH_A = "a" * 64
GOOD = (
    "# confide requirements lock v1\n"
    "# target: python 3.11, implementation cp, platform manylinux_2_28_x86_64\n"
    "# source: requirements.txt sha256:" + "0" * 64 + "\n"
    "numpy==2.1.3 \\\n"
    f"    --hash=sha256:{HASH_A}\n"
    "pandas==2.2.3 \\\n"
    f"    --hash=sha256:{'b' * 64}\n"
).encode()


def _manifest(requirements_sha256: bytes | None) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(32),
        app_id=uuid.UUID(int=1),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=1_900_000_000,
        certificate_sha256=None,
        san=("a.example",),
        subject=None,
        requirements_sha256=requirements_sha256,
    )


def test_a_lock_parses_and_its_digest_is_the_sha256_of_its_bytes() -> None:
    lock = RequirementsLock.from_bytes(GOOD)
    assert lock.pins() == ("numpy==2.1.3", "pandas==2.2.3")
    assert lock.python == "3.11" and lock.platform == "manylinux_2_28_x86_64"
    assert lock.to_bytes() == GOOD
    assert lock.digest() == hashlib.sha256(GOOD).digest()


def _replace(old: str, new: str) -> bytes:
    changed = GOOD.replace(old.encode(), new.encode(), 1)
    assert changed != GOOD, f"{old!r} is not in the lock: the case would pass vacuously"
    return changed


BAD = {
    "no header": (_replace("# confide requirements lock v1\n", ""), "does not start with"),
    "other version": (_replace("lock v1", "lock v3"), "does not start with"),
    "v2 header on wheels only": (_replace("lock v1", "lock v2"), "line 4"),
    "no target": (_replace("# target", "# targets"), "line 2"),
    "python 2": (_replace("python 3.11", "python 2.7"), "is not 3.N"),
    "no source": (_replace("# source: ", "# src: "), "line 3"),
    "bad source": (_replace("# source: requirements.txt", "# source: ;rm -rf"), "must match"),
    "unpinned": (_replace("numpy==2.1.3", "numpy>=2.1.3"), "line 4"),
    "unnormalized name": (_replace("numpy==", "NumPy=="), "not a normalized"),
    "bad version": (_replace("==2.1.3", "==v2"), "is not a version"),
    "short hash": (_replace(HASH_A, "a" * 63), "line 5"),
    "upper-case hash": (_replace(HASH_A, "A" * 64), "line 5"),
    "md5": (_replace("sha256:" + HASH_A, "md5:" + "a" * 32), "line 5"),
    "two hashes": (_replace(f"{HASH_A}\n", f"{HASH_A} \\\n    --hash=sha256:{HASH_A}\n"), "line"),
    "unsorted": (
        _replace("numpy==2.1.3", "zlib==2.1.3"),
        "sorted by name",
    ),
    "blank line": (_replace("pandas==", "\npandas=="), "line 6"),
    "comment": (
        _replace("pandas==", "# via x\n    --hash=sha256:" + HASH_A + "\npandas=="),
        "line",
    ),
    "no newline at end": (GOOD[:-1], "newline"),
    "crlf": (GOOD.replace(b"\n", b"\r\n"), "does not start with"),
    "not ascii": (_replace("source: requirements", "source: réquirements"), "ASCII"),
    "long line": (_replace("# source: ", "# source: " + "x" * 300), "longer than"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_lock_is_refused_naming_what(case: str) -> None:
    data, expected = BAD[case]
    with pytest.raises(UsageError, match=expected):
        RequirementsLock.from_bytes(data)


def test_a_lock_is_bounded_in_size_and_count() -> None:
    with pytest.raises(UsageError, match="larger than"):
        RequirementsLock.from_bytes(GOOD + b"#" * MAX_LOCK_SIZE)
    many = tuple(
        LockedRequirement(f"d{i:04d}", "1.0", hashlib.sha256(str(i).encode()).digest())
        for i in range(MAX_LOCKED + 1)
    )
    with pytest.raises(UsageError, match="more than"):
        RequirementsLock(python="3.11", platform="p", source="s", requirements=many)


def test_the_launch_manifest_measures_the_lock_and_one_pin_changes_the_fingerprint() -> None:
    lock = RequirementsLock.from_bytes(GOOD)
    bumped = RequirementsLock.from_bytes(_replace("pandas==2.2.3", "pandas==2.2.2"))
    with_lock, with_bumped = _manifest(lock.digest()), _manifest(bumped.digest())
    assert with_lock.measurement() != with_bumped.measurement()
    assert with_lock.measurement() != _manifest(None).measurement()
    # Round trip through the canonical JSON, with and without a lock.
    for manifest in (with_lock, _manifest(None)):
        assert LaunchManifest.from_json(manifest.to_json()) == manifest
    # An app without a lock keeps the manifest it had before locks existed.
    assert b"requirements_sha256" not in _manifest(None).to_json()
    assert with_lock.to_dict()["requirements_sha256"] == lock.digest().hex()


def test_a_manifest_with_a_malformed_lock_digest_is_refused() -> None:
    obj = _manifest(bytes(32)).to_dict()
    obj["requirements_sha256"] = "zz"
    with pytest.raises(UsageError, match="malformed"):
        LaunchManifest.from_dict(obj)
    with pytest.raises(UsageError, match="32 bytes"):
        dataclasses.replace(_manifest(None), requirements_sha256=b"short")


_names = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_versions = st.from_regex(r"[0-9][0-9A-Za-z.+!_-]{0,20}", fullmatch=True)


@given(
    st.dictionaries(_names, st.tuples(_versions, st.binary(min_size=32, max_size=32)), max_size=8),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._:/=+@-]{0,40}", fullmatch=True),
)
def test_every_lock_round_trips(entries: dict[str, tuple[str, bytes]], source: str) -> None:
    lock = RequirementsLock(
        python="3.12",
        platform="manylinux_2_28_x86_64",
        source=source,
        requirements=tuple(
            LockedRequirement(name, version, digest)
            for name, (version, digest) in sorted(entries.items())
        ),
    )
    assert RequirementsLock.from_bytes(lock.to_bytes()) == lock


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_our_error(data: bytes) -> None:
    try:
        lock = RequirementsLock.from_bytes(GOOD[:120] + data)
    except UsageError:
        return
    assert lock.to_bytes() == GOOD[:120] + data


def test_names_are_compared_as_pep_503_says() -> None:
    assert normalize_name("Python_Dateutil") == "python-dateutil"
    assert normalize_name("zope.interface") == "zope-interface"


def test_a_manylinux_target_takes_every_older_manylinux_wheel() -> None:
    tags = compatible_platforms("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    # pandas 1.5.3 for CPython 3.11 is published as manylinux_2_17 / manylinux2014 only.
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags
    assert compatible_platforms("macosx_11_0_arm64") == ("macosx_11_0_arm64",)


# -- version 2: source distributions the owner allowed, and build backends -------------------

GOOD_V2 = (
    "# confide requirements lock v2\n"
    "# target: python 3.11, implementation cp, platform manylinux_2_28_x86_64\n"
    "# source: requirements.txt sha256:" + "0" * 64 + "\n"
    "# allow-sdists: tinypkg\n"
    "numpy==2.1.3 \\\n"
    f"    --hash=sha256:{HASH_A}\n"
    "# build-only\n"
    "setuptools==75.6.0 \\\n"
    f"    --hash=sha256:{'c' * 64}\n"
    "# sdist\n"
    "tinypkg==1.0 \\\n"
    f"    --hash=sha256:{'d' * 64}\n"
).encode()


def test_a_v2_lock_says_which_entries_are_sdists_and_which_build_only() -> None:
    lock = RequirementsLock.from_bytes(GOOD_V2)
    assert lock.version == 2 and lock.allow_sdists == ("tinypkg",)
    assert [(r.name, r.kind) for r in lock.requirements] == [
        ("numpy", "wheel"),
        ("setuptools", BUILD),
        ("tinypkg", SDIST),
    ]
    assert lock.to_bytes() == GOOD_V2
    assert lock.digest() == hashlib.sha256(GOOD_V2).digest()
    # the kind and the opt-in are measured: changing either changes the digest
    unmarked = dataclasses.replace(
        lock, requirements=tuple(dataclasses.replace(r, kind="wheel") for r in lock.requirements)
    )
    assert unmarked.digest() != lock.digest()
    assert dataclasses.replace(lock, allow_sdists=()).digest() != lock.digest()


def test_a_lock_of_wheels_keeps_its_v1_bytes() -> None:
    lock = RequirementsLock.from_bytes(GOOD)
    assert lock.version == 1 and lock.to_bytes().startswith(b"# confide requirements lock v1\n")


def _replace_v2(old: str, new: str) -> bytes:
    changed = GOOD_V2.replace(old.encode(), new.encode(), 1)
    assert changed != GOOD_V2, f"{old!r} is not in the lock: the case would pass vacuously"
    return changed


BAD_V2 = {
    "no allow line": (_replace_v2("# allow-sdists: tinypkg\n", ""), "line 4"),
    "allow without space": (_replace_v2("allow-sdists: ", "allow-sdists:"), "line 4"),
    "allow unsorted": (_replace_v2(": tinypkg", ": zz tinypkg"), "sorted"),
    "allow twice": (_replace_v2(": tinypkg", ": tinypkg tinypkg"), "sorted"),
    "allow unnormalized": (_replace_v2(": tinypkg", ": TinyPkg"), "normalized"),
    "allow too many": (
        _replace_v2(
            ": tinypkg", ":" + "".join(f" p{i:03d}" for i in range(MAX_ALLOWED_SDISTS + 1))
        ),
        "more than",
    ),
    "unknown marker": (_replace_v2("# sdist\n", "# source-dist\n"), "line 10"),
    "two markers": (_replace_v2("# sdist\n", "# sdist\n# sdist\n"), "line 11"),
    "marker at end": (GOOD_V2 + b"# sdist\n", "two lines"),
    "marker in v1": (_replace("pandas==", "# sdist\npandas=="), "line 6"),
    "v2 of wheels only": (
        GOOD.replace(b"lock v1\n", b"lock v2\n").replace(
            b"sha256:" + b"0" * 64 + b"\n", b"sha256:" + b"0" * 64 + b"\n# allow-sdists:\n"
        ),
        "canonical form",
    ),
    "trailing space on marker": (_replace_v2("# build-only\n", "# build-only \n"), "line 7"),
}


@pytest.mark.parametrize("case", sorted(BAD_V2))
def test_a_malformed_v2_lock_is_refused_naming_what(case: str) -> None:
    data, expected = BAD_V2[case]
    with pytest.raises(UsageError, match=expected):
        RequirementsLock.from_bytes(data)


def test_a_v2_lock_is_bounded_in_entries_with_markers() -> None:
    body = "".join(
        f"# sdist\nd{i:04d}==1.0 \\\n    --hash=sha256:{HASH_A}\n" for i in range(MAX_LOCKED + 1)
    )
    data = GOOD_V2.split(b"numpy")[0] + body.encode()
    with pytest.raises(UsageError, match=f"more than {MAX_LOCKED}|larger than"):
        RequirementsLock.from_bytes(data)
