"""The launch manifest: canonical bytes, and a fingerprint that every input changes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.errors import UsageError
from confide.runtime import runtime_code_hash
from confide.wire import LaunchManifest, TlsMode

BASE = LaunchManifest(
    runtime_sha256=bytes(range(32)),
    package_sha256=bytes(range(32, 64)),
    app_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    application="app:app",
    tls=TlsMode.RATLS,
    ratls_expiry=1_900_000_000,
    certificate_sha256=None,
    san=("app.example.com",),
    subject="app.example.com",
)


def test_manifest_bytes_are_canonical_and_documented() -> None:
    expected = {
        "app_id": "12345678-1234-5678-1234-567812345678",
        "application": "app:app",
        "certificate_sha256": None,
        "format": "confide-launch-manifest",
        "package_sha256": bytes(range(32, 64)).hex(),
        "ratls_expiry": 1_900_000_000,
        "runtime_sha256": bytes(range(32)).hex(),
        "san": ["app.example.com"],
        "subject": "app.example.com",
        "tls": "ratls",
        "version": 1,
    }
    assert BASE.to_json() == json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
    assert BASE.measurement() == hashlib.sha256(b"confide/launch/v1\x00" + BASE.to_json()).digest()


# Each row changes one input; the fingerprint must change with it.
CHANGES = {
    "runtime": {"runtime_sha256": bytes(32)},
    "package": {"package_sha256": bytes(32)},
    "app id": {"app_id": uuid.UUID(int=7)},
    "application": {"application": "app:other"},
    "expiry": {"ratls_expiry": 1_900_000_001},
    "san added": {"san": ("app.example.com", "www.example.com")},
    "san order": {"san": ("b.example", "a.example")},
    "subject": {"subject": "other.example.com"},
    "no subject": {"subject": None},
    "owner certificate mode": {
        "tls": TlsMode.OWNER,
        "ratls_expiry": None,
        "certificate_sha256": bytes(32),
    },
    "operator TLS mode": {"tls": TlsMode.OPERATOR, "ratls_expiry": None},
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_every_input_changes_the_fingerprint(change: dict[str, object]) -> None:
    changed = dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
    assert changed.measurement() != BASE.measurement()


def test_certificate_changes_the_fingerprint() -> None:
    a = dataclasses.replace(
        BASE, tls=TlsMode.OWNER, ratls_expiry=None, certificate_sha256=bytes(32)
    )
    b = dataclasses.replace(a, certificate_sha256=b"\x01" * 32)
    assert a.measurement() != b.measurement()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"application": "app"}, "module:attribute"),
        ({"application": "app:app; rm -rf /"}, "module:attribute"),
        ({"ratls_expiry": None}, "RA-TLS expiry"),
        ({"tls": TlsMode.OPERATOR}, "RA-TLS expiry"),
        ({"tls": TlsMode.OWNER, "ratls_expiry": None}, "certificate hash"),
        ({"package_sha256": b"short"}, "32 bytes"),
        ({"san": ("",)}, "SAN"),
        ({"subject": ""}, "subject"),
    ],
)
def test_invalid_manifests_are_refused(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        dataclasses.replace(BASE, **change)  # type: ignore[arg-type]


def test_round_trip_through_json() -> None:
    assert LaunchManifest.from_json(BASE.to_json()) == BASE


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.update(format="other"), "not a Confide launch manifest"),
        (lambda d: d.update(extra=1), "fields this version does not know"),
        (lambda d: d.pop("san"), "malformed"),
        (lambda d: d.update(tls="tcp"), "malformed"),
    ],
)
def test_unknown_or_malformed_manifests_fail(mutate: object, fragment: str) -> None:
    obj = json.loads(BASE.to_json())
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(UsageError, match=fragment):
        LaunchManifest.from_json(json.dumps(obj))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_raises_anything_else(text: str) -> None:
    try:
        LaunchManifest.from_json(text)
    except UsageError:
        pass


def test_runtime_hash_covers_code_and_ignores_caches(tmp_path: Path) -> None:
    pkg = tmp_path / "confide"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "mod.py").write_text("y = 2\n")
    first = runtime_code_hash(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00" * 10)
    (pkg / "notes.txt").write_text("not code")
    assert runtime_code_hash(pkg) == first
    (pkg / "sub" / "mod.py").write_text("y = 3\n")
    assert runtime_code_hash(pkg) != first
    (pkg / "sub" / "mod.py").write_text("y = 2\n")
    (pkg / "sub" / "mod.py").rename(pkg / "sub" / "other.py")
    assert runtime_code_hash(pkg) != first


def test_runtime_hash_of_the_installed_package_is_stable() -> None:
    assert runtime_code_hash() == runtime_code_hash()
    assert len(runtime_code_hash()) == 32


def test_runtime_hash_of_a_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a folder"):
        runtime_code_hash(tmp_path / "absent")


def test_operator_code_is_not_measured(tmp_path: Path) -> None:
    pkg = tmp_path / "confide"
    (pkg / "operator").mkdir(parents=True)
    (pkg / "runtime").mkdir()
    (pkg / "runtime" / "operator").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime" / "operator" / "x.py").write_text("a = 1\n")
    first = runtime_code_hash(pkg)
    (pkg / "operator" / "_api.py").write_text("changed = True\n")
    assert runtime_code_hash(pkg) == first
    # Only the top-level operator package is left out, not any folder of that name.
    (pkg / "runtime" / "operator" / "x.py").write_text("a = 2\n")
    assert runtime_code_hash(pkg) != first


def test_the_runtime_command_never_loads_the_operator() -> None:
    """What is left out of the code hash must never run in the enclave."""
    import subprocess
    import sys

    probe = (
        "import sys, confide.cli, confide.runtime, confide.tee, confide.wire;"
        "print(sorted(m for m in sys.modules if m.startswith('confide.operator')"
        " or m.split('.')[0] in ('sqlalchemy', 'fastapi', 'alembic')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_runtime_code_hash_is_the_environments_digest(tmp_path: Path) -> None:
    """ADR 0017: the manifest's runtime hash covers the interpreter, the standard library
    and every dependency (h11, uvicorn, ...), not only Confide's own files."""
    from confide.gramine import runtime_environment

    env = runtime_environment(cache_dir=tmp_path)
    assert runtime_code_hash(cache_dir=tmp_path) == env.digest
    labels = {f.label for f in env.files}
    assert {"site/h11/_readers.py", "site/uvicorn/main.py", "stdlib/os.py"} <= labels
