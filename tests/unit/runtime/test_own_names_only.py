"""A runtime behind the operator's TLS serves only its own names (``OwnNamesOnly``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from confide.runtime._asgi import OwnNamesOnly, host_name

NAMES = ("0b6f.apps.example", "shop.example")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("shop.example", "shop.example"),
        ("Shop.Example", "shop.example"),
        ("shop.example.", "shop.example"),
        ("shop.example:8443", "shop.example"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("  shop.example  ", "shop.example"),
    ],
)
def test_host_name_is_the_lower_case_name_without_port_or_final_dot(
    header: str, expected: str
) -> None:
    assert host_name(header) == expected


def _call(
    kind: str, headers: list[tuple[bytes, bytes]], raw_path: bytes = b"/"
) -> tuple[bool, list[dict[str, Any]]]:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    scope = {"type": kind, "headers": headers, "path": "/", "raw_path": raw_path}
    asyncio.run(OwnNamesOnly(app, NAMES)(scope, receive, send))  # type: ignore[arg-type]
    return bool(reached), sent


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", b"0b6f.apps.example")],
        [(b"Host", b"SHOP.example:443")],
        [(b"host", b"shop.example."), (b"accept", b"*/*")],
    ],
)
def test_a_request_for_one_of_the_names_reaches_the_app(headers: list[tuple[bytes, bytes]]) -> None:
    reached, sent = _call("http", headers)
    assert reached and not sent


@pytest.mark.parametrize(
    ("why", "headers"),
    [
        ("another app's name", [(b"host", b"other.apps.example")]),
        ("a suffix of a name", [(b"host", b"apps.example")]),
        ("a name with a suffix", [(b"host", b"shop.example.evil")]),
        ("the runtime's address", [(b"host", b"10.0.0.7:8443")]),
        ("no Host", []),
        ("two Hosts", [(b"host", b"shop.example"), (b"host", b"other.example")]),
        ("an empty Host", [(b"host", b"")]),
    ],
)
def test_any_other_host_is_misdirected_before_the_app(
    why: str, headers: list[tuple[bytes, bytes]]
) -> None:
    reached, sent = _call("http", headers)
    assert not reached, why
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 421, why
    assert b"misdirected request" in sent[1]["body"]
    assert b"0b6f" not in sent[1]["body"]  # the app's names are not told


def test_a_websocket_to_another_host_is_closed_before_it_is_accepted() -> None:
    reached, sent = _call("websocket", [(b"host", b"other.example")])
    assert not reached
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": None}]
    reached, sent = _call("websocket", [(b"host", b"shop.example")])
    assert reached and not sent


def test_lifespan_passes_through() -> None:
    reached, _ = _call("lifespan", [])
    assert reached


_OWN = [(b"host", b"shop.example")]


@pytest.mark.parametrize(
    ("target", "served"),
    [
        (b"/x", True),
        (b"*", True),
        (b"http://shop.example/x", True),
        (b"https://SHOP.example.:443/x?y=1", True),
        (b"shop.example:443", True),  # authority form (CONNECT)
        (b"http://other.example/", False),
        (b"http://other.example", False),
        (b"http://shop.example@other.example/", False),
        (b"http://other.example/?h=shop.example", False),
        (b"other.example:443", False),
        (b"http:/shop.example", False),
    ],
)
def test_an_absolute_form_target_must_name_us_too(target: bytes, served: bool) -> None:
    """Review (ADR 0023): RFC 9112 section 3.2.2 has the target's authority name the host
    in absolute form, not ``Host``; both must be ours."""
    reached, sent = _call("http", _OWN, raw_path=target)
    assert reached == served, target
    assert bool(sent) != served


def test_no_names_serve_nothing() -> None:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "headers": _OWN, "path": "/", "raw_path": b"/"}
    asyncio.run(OwnNamesOnly(app, ())(scope, receive, send))  # type: ignore[arg-type]
    assert not reached
