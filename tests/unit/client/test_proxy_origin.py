"""The proxy answers only its own origin: Host names (DNS rebinding) and Origin (cross-site).

Each refusal is its own row with the status and the words it must say; the
accepted rows guard against a check that refuses everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from confide.client import loopback_hosts, request_refusal
from confide.client._proxy import _request_headers

OWN = loopback_hosts("127.0.0.1", 8080)


def test_loopback_hosts_are_the_listening_names_with_the_port() -> None:
    assert OWN == {"127.0.0.1:8080", "localhost:8080"}
    assert loopback_hosts("::1", 9000) == {"[::1]:9000", "localhost:9000"}
    assert loopback_hosts("127.0.0.1", 80) == {
        "127.0.0.1:80",
        "localhost:80",
        "127.0.0.1",
        "localhost",
    }
    wildcard = loopback_hosts("0.0.0.0", 8080, extra=["Box.Lan"])  # noqa: S104
    assert {"0.0.0.0:8080", "127.0.0.1:8080", "[::1]:8080", "box.lan:8080"} <= wildcard


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    headers: list[tuple[bytes, bytes]]
    #: ``None``: forwarded; else the status and a phrase the one-line reason says.
    refused: tuple[int, str] | None


ROWS = [
    Row("own Host", "GET", [(b"host", b"127.0.0.1:8080")], None),
    Row("localhost", "GET", [(b"host", b"LOCALHOST:8080")], None),
    Row(
        "same-origin POST",
        "POST",
        [
            (b"host", b"127.0.0.1:8080"),
            (b"origin", b"http://127.0.0.1:8080"),
            (b"sec-fetch-site", b"same-origin"),
        ],
        None,
    ),
    Row(
        "typed in the address bar",
        "GET",
        [(b"host", b"localhost:8080"), (b"sec-fetch-site", b"none")],
        None,
    ),
    Row(
        "a link from another site (top-level navigation)",
        "GET",
        [
            (b"host", b"127.0.0.1:8080"),
            (b"sec-fetch-site", b"cross-site"),
            (b"sec-fetch-mode", b"navigate"),
        ],
        None,
    ),
    Row(
        "DNS rebinding: the attacker's name",
        "GET",
        [(b"host", b"evil.example:8080")],
        (421, "Host evil.example:8080 is not one of"),
    ),
    Row("own name, other port", "GET", [(b"host", b"127.0.0.1:80")], (421, "Host")),
    Row("no Host", "GET", [], (421, "Host none")),
    Row(
        "two Host headers",
        "GET",
        [(b"host", b"127.0.0.1:8080"), (b"host", b"evil.example")],
        (421, "Host"),
    ),
    Row(
        "cross-site form POST",
        "POST",
        [
            (b"host", b"127.0.0.1:8080"),
            (b"origin", b"https://evil.example"),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        (403, "Origin https://evil.example is not this proxy's"),
    ),
    Row(
        "opaque origin (sandboxed page)",
        "POST",
        [(b"host", b"127.0.0.1:8080"), (b"origin", b"null")],
        (403, "Origin null"),
    ),
    Row(
        "CORS preflight from another site",
        "OPTIONS",
        [(b"host", b"127.0.0.1:8080"), (b"origin", b"https://evil.example")],
        (403, "cross-origin"),
    ),
    Row(
        "another local origin",
        "POST",
        [(b"host", b"127.0.0.1:8080"), (b"origin", b"http://127.0.0.1:3000")],
        (403, "cross-origin"),
    ),
    Row(
        "cross-site fetch without Origin (no-cors GET)",
        "GET",
        [
            (b"host", b"127.0.0.1:8080"),
            (b"sec-fetch-site", b"cross-site"),
            (b"sec-fetch-mode", b"no-cors"),
        ],
        (403, "Sec-Fetch-Site cross-site"),
    ),
    Row(
        "a cross-site navigation that posts (form target)",
        "POST",
        [
            (b"host", b"127.0.0.1:8080"),
            (b"sec-fetch-site", b"cross-site"),
            (b"sec-fetch-mode", b"navigate"),
        ],
        (403, "cross-site request refused"),
    ),
    Row(
        "same-site (another port of localhost)",
        "GET",
        [(b"host", b"localhost:8080"), (b"sec-fetch-site", b"same-site")],
        (403, "same-site"),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_request_refusal(row: Row) -> None:
    refusal = request_refusal(row.method, row.headers, OWN)
    if row.refused is None:
        assert refusal is None
        return
    assert refusal is not None
    status, reason = refusal
    assert status == row.refused[0]
    assert row.refused[1] in reason
    assert "\n" not in reason


def test_the_table_has_both_outcomes_and_every_status() -> None:
    assert {r.refused is None for r in ROWS} == {True, False}
    assert {r.refused[0] for r in ROWS if r.refused} == {403, 421}


def test_no_allowed_host_refuses_everything() -> None:
    refusal = request_refusal("GET", [(b"host", b"127.0.0.1:8080")], frozenset())
    assert refusal is not None and refusal[0] == 421


def test_own_origin_and_referer_become_the_apps_upstream() -> None:
    headers, _ = _request_headers(
        [
            (b"Host", b"127.0.0.1:8080"),
            (b"Origin", b"http://127.0.0.1:8080"),
            (b"Referer", b"http://127.0.0.1:8080/form?x=1"),
            (b"Referer", b"http://127.0.0.1:80801/other"),
        ],
        "app.example",
        OWN,
    )
    assert headers == [
        (b"host", b"app.example"),
        (b"origin", b"https://app.example"),
        (b"referer", b"https://app.example/form?x=1"),
        (b"referer", b"http://127.0.0.1:80801/other"),
    ]
