"""The release transparency log through the real API, on SQLite and on PostgreSQL.

An owner logs a signed release of one of their apps and gets back an index,
a checkpoint signed by the log key and an inclusion proof that verify here;
a user reads what the log holds about the fingerprint without a token and
:func:`confide.release.verify_release` accepts it. Refused statements are
answered 422 naming the field and leave the log as it was; concurrent
appends get distinct consecutive indexes.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest

from confide.errors import ReleaseError
from confide.release import (
    MAX_ENTRIES,
    Checkpoint,
    LoggedEntry,
    LogVerifier,
    OwnerKey,
    Release,
    ReleaseEvidence,
    Revocation,
    leaf_hash,
    verify_inclusion,
    verify_release,
)
from confide.wire import LaunchManifest
from support.operator_api import START, Operator, upload

OWNER = OwnerKey(bytes([5]) * 32)
OTHER = OwnerKey(bytes([6]) * 32)


def b64(items: list[str]) -> tuple[bytes, ...]:
    return tuple(base64.b64decode(item) for item in items)


def created(operator: Operator, token: str, package: bytes) -> LaunchManifest:
    with operator.client(token) as c:
        response = upload(c, package)
    assert response.status_code == 201, response.text
    return LaunchManifest.from_dict(response.json()["launch"])


def release_of(launch: LaunchManifest, version: str = "1.0") -> Release:
    return Release.of(launch, not_before=START, validity=timedelta(days=30), version=version)


def post(operator: Operator, token: str, envelope: bytes, key: OwnerKey) -> httpx.Response:
    body = {"envelope": envelope.decode(), "owner_key": key.public_key.to_text()}
    with operator.client(token) as c:
        return c.post("/api/v1/log/statements", json=body)


def log_info(operator: Operator) -> dict[str, Any]:
    with operator.client() as c:
        response = c.get("/api/v1/log")
    assert response.status_code == 200
    info: dict[str, Any] = response.json()
    return info


def test_a_logged_release_verifies_for_a_user(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    launch = created(operator, token, package)
    envelope = release_of(launch).sign(OWNER).to_json()
    response = post(operator, token, envelope, OWNER)
    assert response.status_code == 201, response.text
    answer = response.json()
    info = log_info(operator)
    assert info["origin"] == "confide.test/confide-log"
    verifier = LogVerifier.from_text(info["log_key"])
    checkpoint = Checkpoint.open(answer["checkpoint"].encode(), verifier)
    assert (answer["index"], checkpoint.size) == (0, 1)
    verify_inclusion(leaf_hash(envelope), 0, 1, b64(answer["proof"]), checkpoint.root)

    fingerprint = launch.measurement()
    with operator.client() as c:  # no token: users read the log
        about = c.get(f"/api/v1/log/fingerprints/{fingerprint.hex()}").json()
    evidence = ReleaseEvidence(
        about["checkpoint"].encode(),
        tuple(
            LoggedEntry(e["index"], base64.b64decode(e["envelope"]), b64(e["proof"]))
            for e in about["entries"]
        ),
        b64(about["consistency"]),
    )
    verified = verify_release(
        evidence,
        owner=OWNER.public_key,
        fingerprint=fingerprint,
        log=verifier,
        last_seen=None,
        now=START + timedelta(days=1),
    )
    assert (verified.log_index, verified.release.version) == (0, "1.0")


def test_refused_statements_leave_the_log_as_it_was(operator: Operator, package: bytes) -> None:
    alice, mallory = operator.token("alice"), operator.token("mallory")
    launch = created(operator, alice, package)
    good = release_of(launch).sign(OWNER).to_json()
    envelope = json.loads(good)
    envelope["payload"] = base64.b64encode(b'{"x":1}').decode()
    cases = {
        "another account's app": (mallory, good, OWNER, "envelope"),
        "signed by another key": (alice, good, OTHER, "envelope"),
        "tampered payload": (alice, json.dumps(envelope).encode(), OWNER, "envelope"),
        "a keyid that is not the signing key": (
            alice,
            json.dumps(
                {
                    **json.loads(good),
                    "signatures": [
                        {**json.loads(good)["signatures"][0], "keyid": OTHER.public_key.to_text()}
                    ],
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode(),
            OWNER,
            "envelope",
        ),
        "not canonical": (
            alice,
            json.dumps(json.loads(good), indent=1).encode(),
            OWNER,
            "envelope",
        ),
        "revocation of nothing released": (
            alice,
            Revocation(launch.measurement(), START).sign(OWNER).to_json(),
            OWNER,
            "envelope",
        ),
    }
    for name, (token, body, key, field) in cases.items():
        response = post(operator, token, body, key)
        assert response.status_code == 422, name
        assert response.json()["detail"][0]["loc"] == ["body", field], name
    with operator.client(alice) as c:
        bad_key = c.post("/api/v1/log/statements", json={"envelope": "{}", "owner_key": "x"})
        too_big = c.post(
            "/api/v1/log/statements", json={"envelope": "x" * 300_000, "owner_key": "x"}
        )
    assert bad_key.status_code == too_big.status_code == 422
    with operator.client() as c:
        anonymous = c.post("/api/v1/log/statements", json={"envelope": "{}", "owner_key": "x"})
    assert anonymous.status_code == 401
    assert (
        Checkpoint.open(
            log_info(operator)["checkpoint"].encode(),
            LogVerifier.from_text(log_info(operator)["log_key"]),
        ).size
        == 0
    )


def test_a_revocation_by_the_releasing_key_is_logged(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    launch = created(operator, token, package)
    assert post(operator, token, release_of(launch).sign(OWNER).to_json(), OWNER).status_code == 201
    revocation = Revocation(launch.measurement(), START, "a bug").sign(OWNER).to_json()
    response = post(operator, token, revocation, OWNER)
    assert response.status_code == 201, response.text
    assert response.json()["index"] == 1


def test_concurrent_appends_get_consecutive_indexes(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    launch = created(operator, token, package)
    envelopes = [release_of(launch, f"v{i}").sign(OWNER).to_json() for i in range(8)]
    barrier = threading.Barrier(len(envelopes), timeout=30)

    def send(envelope: bytes) -> int:
        barrier.wait()
        response = post(operator, token, envelope, OWNER)
        assert response.status_code == 201, response.text
        index: int = response.json()["index"]
        return index

    with ThreadPoolExecutor(len(envelopes)) as pool:
        indexes = list(pool.map(send, envelopes))
    assert sorted(indexes) == list(range(len(envelopes)))
    with operator.client() as c:
        entries = c.get("/api/v1/log/entries", params={"start": 0, "end": 8}).json()["entries"]
        proof = c.get("/api/v1/log/consistency", params={"first": 3, "second": 8}).json()
        refused = c.get("/api/v1/log/entries", params={"start": 0, "end": 1000})
    assert sorted(base64.b64decode(e["envelope"]) for e in entries) == sorted(envelopes)
    assert len(proof["proof"]) > 0
    assert refused.status_code == 422


@pytest.mark.parametrize(
    "path", ["/api/v1/log/fingerprints/" + "A" * 64, "/api/v1/log/fingerprints/00"]
)
def test_a_malformed_fingerprint_is_refused(operator: Operator, path: str) -> None:
    with operator.client() as c:
        assert c.get(path).status_code == 422


def test_no_number_of_releases_pushes_a_revocation_out(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    launch = created(operator, token, package)
    assert post(operator, token, release_of(launch).sign(OWNER).to_json(), OWNER).status_code == 201
    revocation = Revocation(launch.measurement(), START).sign(OWNER).to_json()
    assert post(operator, token, revocation, OWNER).status_code == 201
    for i in range(MAX_ENTRIES):
        again = release_of(launch, f"again-{i}").sign(OWNER).to_json()
        assert post(operator, token, again, OWNER).status_code == 201
    with operator.client() as c:
        about = c.get(f"/api/v1/log/fingerprints/{launch.measurement().hex()}").json()
    shown = {e["index"] for e in about["entries"]}
    assert 1 in shown, "the revocation is shown"
    evidence = ReleaseEvidence(
        about["checkpoint"].encode(),
        tuple(
            LoggedEntry(e["index"], base64.b64decode(e["envelope"]), b64(e["proof"]))
            for e in about["entries"]
        ),
        b64(about["consistency"]),
    )
    with pytest.raises(ReleaseError) as caught:
        verify_release(
            evidence,
            owner=OWNER.public_key,
            fingerprint=launch.measurement(),
            log=LogVerifier.from_text(log_info(operator)["log_key"]),
            last_seen=None,
            now=START + timedelta(days=1),
        )
    assert caught.value.code == "release.revoked"
