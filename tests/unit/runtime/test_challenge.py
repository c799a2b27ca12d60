"""The runtime's challenge endpoint: what it quotes, and how it bounds what each answer costs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from confide.attestation import (
    CHALLENGE_PATH,
    MAX_CHALLENGES_PER_CONNECTION,
    NONCE_SIZE,
    fresh_report_data,
)
from confide.runtime._challenge import (
    CHALLENGE_BURST,
    CHALLENGE_RATE,
    MAX_TRACKED_SOURCES,
    ChallengeApp,
    ChallengeResponder,
)
from confide.tee import TeeKind

DER = b"certificate"
BINDING = b"b" * 32


class RecordingTee:
    """Answers a quote that is its report data, and records what it was asked."""

    kind = TeeKind.SIMULATION
    measurement = bytes(32)

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def get_quote(self, report_data: bytes) -> bytes:
        self.asked.append(report_data)
        return b"quote:" + report_data

    def sealing_key(self) -> bytes:
        return bytes(32)


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _request(
    app: ChallengeApp, body: bytes, *, method: str = "POST", path: str = CHALLENGE_PATH
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return sent[0]["status"], sent[1]["body"]


def _connection(
    tee: RecordingTee, *, version: str = "TLSv1.3", binding: bytes | None = BINDING
) -> ChallengeApp:
    responder = ChallengeResponder(tee, DER)
    return ChallengeApp(_app, responder, binding=binding, tls_version=version, source="192.0.2.1")


def test_the_answer_quotes_the_nonce_the_connection_and_the_certificate() -> None:
    tee = RecordingTee()
    nonce = bytes(range(NONCE_SIZE))
    status, body = _request(_connection(tee), nonce)
    assert status == 200
    assert tee.asked == [fresh_report_data(nonce, DER, BINDING)]
    assert body == b"quote:" + tee.asked[0]


def test_other_paths_go_to_the_app() -> None:
    tee = RecordingTee()
    assert _request(_connection(tee), b"", method="GET", path="/")[0] == 204
    assert tee.asked == []


@pytest.mark.parametrize(
    ("why", "connection", "body", "method", "status", "code"),
    [
        ("a nonce too short", {}, bytes(NONCE_SIZE - 1), "POST", 400, "challenge.nonce_size"),
        ("a nonce too long", {}, bytes(NONCE_SIZE + 1), "POST", 400, "challenge.nonce_size"),
        ("no body", {}, b"", "POST", 400, "challenge.nonce_size"),
        ("a GET", {}, bytes(NONCE_SIZE), "GET", 405, "challenge.method"),
        (
            "TLS 1.2",
            {"version": "TLSv1.2"},
            bytes(NONCE_SIZE),
            "POST",
            421,
            "challenge.tls_version",
        ),
        (
            "plain HTTP",
            {"version": None, "binding": None},
            bytes(NONCE_SIZE),
            "POST",
            421,
            "challenge.tls_version",
        ),
    ],
)
def test_refusals_cost_no_quote(
    why: str, connection: dict[str, Any], body: bytes, method: str, status: int, code: str
) -> None:
    tee = RecordingTee()
    assert _request(_connection(tee), bytes(NONCE_SIZE))[0] == 200  # guard: a valid one works
    asked = len(tee.asked)
    got, answer = _request(_connection(tee, **connection), body, method=method)
    assert (got, json.loads(answer)["error"]) == (status, code), why
    assert len(tee.asked) == asked


def test_one_connection_gets_a_bounded_number_of_answers() -> None:
    tee = RecordingTee()
    app = _connection(tee)
    for _ in range(MAX_CHALLENGES_PER_CONNECTION):
        assert _request(app, bytes(NONCE_SIZE))[0] == 200
    status, body = _request(app, bytes(NONCE_SIZE))
    assert (status, json.loads(body)["error"]) == (429, "challenge.per_connection")
    assert len(tee.asked) == MAX_CHALLENGES_PER_CONNECTION


def test_each_source_has_a_bucket_refilled_over_time() -> None:
    responder = ChallengeResponder(RecordingTee(), DER)
    assert all(responder.admit("a", 100.0) for _ in range(CHALLENGE_BURST))
    assert not responder.admit("a", 100.0)
    assert responder.admit("b", 100.0)  # another source has its own bucket
    assert not responder.admit("a", 100.0 + 0.5 / CHALLENGE_RATE)
    assert responder.admit("a", 100.0 + 1.0 / CHALLENGE_RATE)
    assert not responder.admit("a", 100.0 + 1.0 / CHALLENGE_RATE)


def test_the_sources_kept_are_bounded() -> None:
    responder = ChallengeResponder(RecordingTee(), DER)
    for n in range(MAX_TRACKED_SOURCES + 10):
        responder.admit(f"s{n}", 0.0)
    assert len(responder._buckets) == MAX_TRACKED_SOURCES
