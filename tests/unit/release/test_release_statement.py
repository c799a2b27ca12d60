"""DSSE envelopes, owner keys and release statements: formats, round trips, refusals."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import ReleaseError, UsageError
from confide.release import (
    Envelope,
    OwnerKey,
    OwnerPublicKey,
    Release,
    Revocation,
    open_statement,
    pae,
    parse_statement,
)
from confide.wire import LaunchManifest, TlsMode

START = datetime(2026, 12, 1, tzinfo=UTC)


def test_pae_matches_the_dsse_example() -> None:
    # The DSSE v1 protocol's worked example.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_owner_key_text_and_file_round_trip() -> None:
    key = OwnerKey.generate()
    assert OwnerKey.from_file_bytes(key.to_file_bytes()) == key
    public = key.public_key
    assert OwnerPublicKey.from_text(f"  {public.to_text()}\n") == public
    assert "secret" in repr(key) and key.seed.hex() not in repr(key)


@pytest.mark.parametrize(
    "text",
    ["ed25519:", "ssh-ed25519 AAAA", "ed25519:" + "A" * 42 + "==", "ed25519:" + "A" * 200],
)
def test_malformed_owner_keys(text: str) -> None:
    with pytest.raises(UsageError):
        OwnerPublicKey.from_text(text)


def manifest(names: tuple[str, ...]) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes([3]) * 32,
        app_id=uuid.UUID(int=9),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=30,
        certificate_sha256=None,
        san=names,
        subject=None,
    )


@given(
    st.lists(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True), min_size=1, max_size=3),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    st.integers(1, 398),
)
def test_release_statements_round_trip(names: list[str], version: str | None, days: int) -> None:
    release = Release.of(
        manifest(tuple(names)), not_before=START, validity=timedelta(days=days), version=version
    )
    assert parse_statement(release.statement()) == release
    key = OwnerKey(bytes(32))
    assert (
        open_statement(Envelope.from_json(release.sign(key).to_json()), key.public_key) == release
    )


def test_revocations_round_trip() -> None:
    revocation = Revocation(bytes(32), START, "a bug")
    assert parse_statement(revocation.statement()) == revocation


def test_a_window_longer_than_allowed_is_refused() -> None:
    with pytest.raises(UsageError):
        Release.of(manifest(("a.example",)), not_before=START, validity=timedelta(days=399))


STATEMENT = Release.of(manifest(("a.example",)), not_before=START, validity=timedelta(days=1))
REFUSED = {
    "not canonical": STATEMENT.statement().replace(b",", b", ", 1),
    "unknown member": STATEMENT.statement().replace(b"{", b'{"extra":1,', 1),
    "another predicate type": STATEMENT.statement().replace(b"urn:confide:release:v1", b"urn:x"),
    "names not the manifest's": STATEMENT.statement().replace(
        b'"names":["a.example"]', b'"names":["b.example"]'
    ),
    "a fingerprint not the manifest's": STATEMENT.statement().replace(
        STATEMENT.fingerprint.hex().encode(), b"00" * 32
    ),
    "not JSON": b"\xff",
}


@pytest.mark.parametrize("payload", REFUSED.values(), ids=REFUSED.keys())
def test_malformed_statements_are_refused(payload: bytes) -> None:
    assert payload != STATEMENT.statement(), "the row changed nothing"
    with pytest.raises(ReleaseError) as caught:
        parse_statement(payload)
    assert caught.value.code == "release.format"


@given(st.binary(max_size=200))
def test_arbitrary_envelopes_raise_only_our_error(data: bytes) -> None:
    with pytest.raises(ReleaseError):
        Envelope.from_json(data).verified_payload(OwnerKey(bytes(32)).public_key, "x")


GRAMINE_MRENCLAVE = bytes([0x6A]) * 32


def test_a_gramine_release_is_signed_over_its_mrenclave_and_round_trips() -> None:
    """A Gramine enclave's fingerprint is its predicted MRENCLAVE, not the launch manifest's
    own measurement; the statement says the enclave size and threads it was predicted with."""
    launch = manifest(("a.example",))
    release = Release.of(
        launch, not_before=START, validity=timedelta(days=30),
        gramine=(GRAMINE_MRENCLAVE, "512M", 32),
    )  # fmt: skip
    assert release.fingerprint == GRAMINE_MRENCLAVE != launch.measurement()
    assert b'"gramine":{"enclaveSize":"512M","maxThreads":32}' in release.statement()
    assert parse_statement(release.statement()) == release
    # Without the Gramine shape, the fingerprint must still be the manifest's own.
    with pytest.raises(UsageError):
        Release(GRAMINE_MRENCLAVE, launch, None, None, START, START + timedelta(days=1))


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ({"enclaveSize": "512 M", "maxThreads": 32}, "enclave size"),
        ({"enclaveSize": "512M", "maxThreads": 0}, "thread count"),
        ({"enclaveSize": "512M", "maxThreads": True}, "thread count"),
        ({"enclaveSize": "512M"}, "Gramine shape"),
        ({"enclaveSize": "512M", "maxThreads": 32, "extra": 1}, "Gramine shape"),
    ],
)
def test_a_malformed_gramine_shape_is_refused(shape: dict[str, object], said: str) -> None:
    good = Release.of(
        manifest(("a.example",)), not_before=START, validity=timedelta(days=30),
        gramine=(GRAMINE_MRENCLAVE, "512M", 32),
    ).statement()  # fmt: skip
    payload = good.replace(
        b'{"enclaveSize":"512M","maxThreads":32}',
        json.dumps(shape, separators=(",", ":"), sort_keys=True).encode(),
    )
    assert payload != good
    with pytest.raises(ReleaseError) as caught:
        parse_statement(payload)
    assert caught.value.code == "release.format"
    assert said in str(caught.value.detail)
