"""The client's side of the release log, against an in-memory operator (httpx MockTransport).

What the user's machine refuses whatever the operator answers: a log key other
than the one pinned or seen before (``log.key``), a "logged" answer whose
checkpoint does not include the statement (``log.inclusion``: a deploy stops
there), a checkpoint that does not extend the one seen (``log.consistency``),
and malformed answers (``operator.response``).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from confide.client import (
    CheckpointStore,
    EnclavePolicy,
    EnclaveVerifier,
    OperatorClient,
    OperatorReleaseLog,
    SimulationEvidence,
    check_release,
    log_statement,
)
from confide.errors import LogError, OperatorError, UsageError
from confide.release import (
    Checkpoint,
    LogKey,
    OwnerKey,
    Release,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)
from confide.wire import LaunchManifest, TlsMode

URL = "https://operator.test"
OWNER = OwnerKey(bytes([3]) * 32)
START = datetime(2026, 12, 1, tzinfo=UTC)
MANIFEST = LaunchManifest(
    runtime_sha256=bytes(32),
    package_sha256=bytes([4]) * 32,
    app_id=uuid.UUID(int=4),
    application="app:app",
    tls=TlsMode.RATLS,
    ratls_expiry=30,
    certificate_sha256=None,
    san=("a.example",),
    subject=None,
)
FINGERPRINT = MANIFEST.measurement()


def b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@dataclass
class FakeLog:
    """An operator's log; ``lie_*`` make it answer what an honest one would not."""

    key: LogKey = field(default_factory=lambda: LogKey("operator.test/confide-log", bytes(32)))
    leaves: list[bytes] = field(default_factory=list)
    lie_inclusion: bool = False
    lie_answer: dict[str, Any] | None = None

    def note(self, size: int | None = None) -> str:
        leaves = self.leaves[: len(self.leaves) if size is None else size]
        hashes = [leaf_hash(leaf) for leaf in leaves]
        return Checkpoint(self.key.name, len(leaves), root(hashes)).sign(self.key).decode()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        hashes = [leaf_hash(leaf) for leaf in self.leaves]
        body: dict[str, Any]
        if path == "/log":
            body = {
                "origin": self.key.name,
                "log_key": self.key.verifier.to_text(),
                "checkpoint": self.note(),
            }
        elif path.startswith("/log/fingerprints/"):
            since = int(request.url.params["since"])
            body = {
                "checkpoint": self.note(),
                "entries": [
                    {
                        "index": i,
                        "envelope": base64.b64encode(leaf).decode(),
                        "proof": b64(inclusion_proof(hashes, i)),
                    }
                    for i, leaf in enumerate(self.leaves)
                ],
                "consistency": b64(consistency_proof(hashes, since)),
            }
        elif path == "/log/consistency":
            first = int(request.url.params["first"])
            body = {"proof": b64(consistency_proof(hashes, first))}
        elif path == "/log/statements":
            envelope = json.loads(request.content)["envelope"].encode()
            index = len(self.leaves)
            self.leaves.append(envelope if not self.lie_inclusion else b"something else")
            hashes = [leaf_hash(leaf) for leaf in self.leaves]
            body = self.lie_answer or {
                "index": index,
                "checkpoint": self.note(),
                "proof": b64(inclusion_proof(hashes, index)),
            }
            return httpx.Response(201, json=body)
        else:
            return httpx.Response(404, json={"detail": "no"})
        return httpx.Response(200, json=body)

    def client(self) -> OperatorClient:
        return OperatorClient(URL, "tok", transport=httpx.MockTransport(self.handle), timeout=5)


def envelope() -> bytes:
    release = Release.of(MANIFEST, not_before=START, validity=timedelta(days=10))
    return release.sign(OWNER).to_json()


def test_logging_then_checking_a_release(tmp_path: Path) -> None:
    log, store = FakeLog(), CheckpointStore(tmp_path)
    with log.client() as client:
        logged = log_statement(client, envelope(), OWNER.public_key, store=store)
        assert (logged.index, logged.checkpoint.size) == (0, 1)
        verified = check_release(
            client, owner=OWNER.public_key, fingerprint=FINGERPRINT, store=store, now=START
        )
    assert verified.log_index == 0
    seen = store.load(URL)
    assert seen is not None and seen.checkpoint.size == 1


def test_a_statement_the_checkpoint_does_not_include_is_not_logged(tmp_path: Path) -> None:
    log = FakeLog(lie_inclusion=True)
    with log.client() as client, pytest.raises(LogError) as caught:
        log_statement(client, envelope(), OWNER.public_key, store=CheckpointStore(tmp_path))
    assert caught.value.code == "log.inclusion"


def test_a_logged_answer_that_forks_the_log_seen_is_refused(tmp_path: Path) -> None:
    log, store = FakeLog(), CheckpointStore(tmp_path)
    with log.client() as client:
        log_statement(client, envelope(), OWNER.public_key, store=store)
        log.leaves[0] = b"rewritten"  # the operator rewrites what this client saw
        with pytest.raises(LogError) as caught:
            log_statement(client, envelope(), OWNER.public_key, store=store)
    assert caught.value.code == "log.consistency"


def test_another_log_key_than_the_one_seen_is_refused(tmp_path: Path) -> None:
    log, store = FakeLog(), CheckpointStore(tmp_path)
    with log.client() as client:
        log_statement(client, envelope(), OWNER.public_key, store=store)
        log.key = LogKey(log.key.name, bytes([9]) * 32)
        with pytest.raises(LogError) as caught:
            check_release(
                client, owner=OWNER.public_key, fingerprint=FINGERPRINT, store=store, now=START
            )
    assert caught.value.code == "log.key"


def test_a_pinned_log_key_is_required(tmp_path: Path) -> None:
    log = FakeLog(leaves=[envelope()])
    with log.client() as client, pytest.raises(LogError) as caught:
        check_release(
            client,
            owner=OWNER.public_key,
            fingerprint=FINGERPRINT,
            store=CheckpointStore(tmp_path),
            now=START,
            log_key=LogKey(log.key.name, bytes([9]) * 32).verifier,
        )
    assert caught.value.code == "log.key"


@pytest.mark.parametrize(
    "answer",
    [{"index": "0", "checkpoint": "x", "proof": []}, {"index": 0, "checkpoint": 1, "proof": []}],
)
def test_malformed_answers_are_the_operators_fault(tmp_path: Path, answer: dict[str, Any]) -> None:
    log = FakeLog(lie_answer=answer)
    with log.client() as client, pytest.raises(OperatorError) as caught:
        log_statement(client, envelope(), OWNER.public_key, store=CheckpointStore(tmp_path))
    assert caught.value.code == "operator.response"


def test_an_owner_policy_needs_a_release_log() -> None:
    policy = EnclavePolicy(None, "a.example", owner=OWNER.public_key)
    with pytest.raises(UsageError, match="release log"):
        EnclaveVerifier(SimulationEvidence(lambda: None), policy)
    with pytest.raises(UsageError, match="nor owner key"):
        EnclavePolicy(None, "a.example")


def test_a_release_log_loads_the_system_ca_bundle_once_for_all_its_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the TLS context is most of a check's cost: one per log, not one per check."""
    import socket
    import ssl

    built: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    with socket.socket() as closed:  # a port nothing listens on: each check fails to connect
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    log = OperatorReleaseLog(f"https://127.0.0.1:{port}", CheckpointStore(tmp_path), 5)
    for _ in range(3):
        with pytest.raises(OperatorError):
            log(OWNER.public_key, bytes(32), START)
    assert len(built) == 1  # guard: the checks did build one (they reached the network)
