"""``AppContext``: the app context file round-trips, and anything else is refused."""

from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.client import AppContext
from confide.errors import UsageError
from confide.wire import HostPort, LaunchManifest, TlsMode

APP_ID = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000001")


def _launch(app_id: uuid.UUID = APP_ID, tls: TlsMode = TlsMode.RATLS) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(range(32)),
        package_sha256=bytes(32),
        app_id=app_id,
        application="app:app",
        tls=tls,
        ratls_expiry=1900000000 if tls == TlsMode.RATLS else None,
        certificate_sha256=bytes(32) if tls == TlsMode.OWNER else None,
        san=(f"{app_id}.confide.test",),
        subject=None,
    )


def _context(**changes: Any) -> AppContext:
    fields: dict[str, Any] = {
        "app_id": APP_ID,
        "name": "hello",
        "project": "demo",
        "operator_url": "https://operator.test/",
        "domains": (f"{APP_ID}.confide.test",),
        "router": HostPort("router.confide.test", 443),
        "tls": TlsMode.RATLS,
        "tee": "simulation",
        "expires_at": datetime(2030, 3, 1, tzinfo=UTC),
        "launch": _launch(),
    }
    fields.update(changes)
    return AppContext(**fields)


def test_the_format_holds_no_secret_and_names_everything_verify_needs() -> None:
    doc = json.loads(_context().to_json())
    assert doc == {
        "format": "confide-app-context",
        "version": 1,
        "app_id": str(APP_ID),
        "name": "hello",
        "project": "demo",
        "operator_url": "https://operator.test",
        "domains": [f"{APP_ID}.confide.test"],
        "router": {"host": "router.confide.test", "port": 443},
        "tls": "ratls",
        "tee": "simulation",
        "expires_at": "2030-03-01T00:00:00+00:00",
        "launch": _launch().to_dict(),
        "fingerprint": _launch().measurement().hex(),
    }


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "hello.context.json"
    context = _context()
    context.save(path)
    assert AppContext.load(path) == context
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_gramine_context_expects_the_predicted_mrenclave(tmp_path: Path) -> None:
    """Under Gramine the expected fingerprint is the MRENCLAVE ``confide deploy`` predicted,
    not the launch manifest's own measurement; it round-trips and is what verify pins."""
    mrenclave = bytes([0x6A]) * 32
    context = _context(tee="gramine", gramine_mrenclave=mrenclave)
    assert context.fingerprint == mrenclave != _launch().measurement()
    doc = json.loads(context.to_json())
    assert doc["fingerprint"] == doc["gramine_mrenclave"] == mrenclave.hex()
    path = tmp_path / "g.json"
    context.save(path)
    assert AppContext.load(path) == context


def _doc(**changes: Any) -> str:
    doc = json.loads(_context().to_json())
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not ...})


REFUSED = [
    ("not json", "not valid JSON"),
    (_doc()[:-1] + ', "tls": "ratls"}', "duplicate key 'tls'"),
    (_doc()[:-1] + ', "n": NaN}', "NaN is not JSON"),
    ("[]", "not a Confide app context"),
    (_doc(format="confide-launch-manifest"), "not a Confide app context"),
    (_doc(version=2), "version 2 is not supported"),
    (_doc(token="secret"), "fields this version does not know: token"),
    (_doc(router=...), "lacks router"),
    (_doc(fingerprint="00" * 32), "the file was altered"),
    (_doc(app_id=str(uuid.uuid4())), "launch manifest is for app"),
    (_doc(router={"host": "h", "port": "443"}), "router must be"),
    (_doc(router={"host": "h", "port": 0}), "not host:port"),
    (_doc(domains=[]), "1 to 64 domains"),
    (_doc(domains="a.b"), "domains must be a list"),
    (_doc(tls="tcp"), "malformed"),
    (_doc(operator_url="ftp://x"), "operator URL"),
    (_doc(expires_at="2030-03-01T00:00:00"), "timezone-aware"),
    (_doc(expires_at=1), "expires_at must be a string"),
    (_doc(launch={"format": "confide-launch-manifest", "version": 9}), "version 9"),
    (_doc(gramine_mrenclave="6a" * 32), "the file was altered"),  # fingerprint disagrees
    (_doc(gramine_mrenclave="6a" * 31, fingerprint="6a" * 31), "32 bytes"),
    (_doc(gramine_mrenclave=7), "gramine_mrenclave must be a hex string"),
    ("{" + " " * (256 * 1024) + "}", "at most"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        AppContext.from_json(text)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ctx.json"
    path.write_text("{}")
    with pytest.raises(UsageError, match=f"^{path}: not a Confide app context"):
        AppContext.load(path)
    with pytest.raises(UsageError, match="cannot read the app context"):
        AppContext.load(tmp_path / "missing.json")


NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    app_id=st.uuids(),
    name=NAMES,
    domains=st.lists(NAMES.map(lambda n: f"{n}.example"), min_size=1, max_size=3),
    port=st.integers(1, 65535),
    tls=st.sampled_from(list(TlsMode)),
    launch_tls=st.sampled_from(list(TlsMode)),
    expires=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    host=st.sampled_from(["127.0.0.1", "::1", "router.example"]),
)
def test_round_trip(
    app_id: uuid.UUID,
    name: str,
    domains: list[str],
    port: int,
    tls: TlsMode,
    launch_tls: TlsMode,
    expires: datetime,
    host: str,
) -> None:
    context = _context(
        app_id=app_id,
        name=name,
        domains=tuple(domains),
        router=HostPort(host, port),
        tls=tls,
        expires_at=expires,
        launch=_launch(app_id, launch_tls),
    )
    assert AppContext.from_json(context.to_json()) == context


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(json.loads(_doc()))), value=JSON)
def test_any_field_value_loads_or_raises_our_error(field: str, value: object) -> None:
    doc = json.loads(_doc())
    doc[field] = value
    try:
        AppContext.from_json(json.dumps(doc))
    except UsageError:
        pass


def test_the_code_digest_is_optional_and_round_trips() -> None:
    """Written by deploy (the owner knows the code), absent from exported contexts."""
    import dataclasses

    context = AppContext.from_json(_context().to_json())
    assert context.code_sha256 is None
    assert "code_sha256" not in context.to_json()
    with_code = dataclasses.replace(context, code_sha256=bytes(range(32)))
    assert AppContext.from_json(with_code.to_json()) == with_code
    with pytest.raises(UsageError, match="32 bytes"):
        dataclasses.replace(context, code_sha256=b"short")
