"""The transport of collateral fetching: one HTTP GET behind a small protocol.

All network access of :mod:`._fetch` goes through a :class:`Fetcher` (one method;
:class:`HttpxFetcher` is the default), so tests and callers can inject their own
transport. Any HTTP status is a response; the caller judges it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol
from urllib.parse import urlsplit

import httpx

from confide.errors import FetchError, UsageError

#: Seconds allowed for each request (connect, read, write and pool wait each).
DEFAULT_TIMEOUT: Final = 10.0
#: Largest response body read; PCK CRLs are the largest items (hex doubles them).
MAX_RESPONSE_SIZE: Final = 4 * 1024 * 1024
#: Largest issuer chain header (a URL-encoded PEM chain is about 3 KiB).
MAX_HEADER_SIZE: Final = 64 * 1024
#: How much of an error body is quoted in a :class:`FetchError`.
ERROR_EXCERPT_SIZE: Final = 160


class _Headers(Mapping[str, str]):
    """Immutable header mapping with case-insensitive lookup."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items: dict[str, tuple[str, str]] = {k.lower(): (k, v) for k, v in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """One HTTP response: status, headers (case-insensitive lookup) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _Headers(self.headers))


class Fetcher(Protocol):
    """Fetches one URL; raises :class:`FetchError` when no response arrives.

    Any HTTP status is a response: the caller judges it.
    """

    def get(self, url: str, *, timeout: float) -> FetchResponse: ...


class HttpxFetcher:
    """A :class:`Fetcher` over an ``httpx.Client``.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    ``verify`` is passed to httpx (TLS verification on by default; with a
    ``transport`` the transport decides). Redirects are not followed: PCS and
    PCCS do not redirect, and a redirect is reported as its HTTP status.
    Bodies over ``max_size`` bytes are cut off and reported.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        *,
        max_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        self._client = httpx.Client(transport=transport, verify=verify, follow_redirects=False)
        self._max_size = max_size

    def get(self, url: str, *, timeout: float) -> FetchResponse:
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("https", "http") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise FetchError(url, "not an http(s) URL")
        try:
            with self._client.stream("GET", url, timeout=timeout) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max_size:
                        raise FetchError(url, f"response body over {self._max_size} bytes")
                return FetchResponse(response.status_code, dict(response.headers), bytes(body))
        except httpx.TimeoutException as exc:
            raise FetchError(url, f"timed out after {timeout:g} s ({one_line(exc)})") from exc
        except httpx.ConnectError as exc:
            raise FetchError(url, f"could not connect: {one_line(exc)}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(url, f"{type(exc).__name__}: {one_line(exc)}") from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxFetcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def one_line(value: object, limit: int = ERROR_EXCERPT_SIZE) -> str:
    """One printable line of at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    text = text or "no detail"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def aware(now: object) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    return now
