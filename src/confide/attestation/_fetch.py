"""Fetching DCAP collateral from a PCCS or Intel's PCS (API v4), with an on-disk cache.

This is the I/O edge of the attestation package; the verification core never
calls it. All network access goes through a :class:`Fetcher` (a one-method
protocol; :class:`HttpxFetcher` is the default), so tests and callers can
inject their own transport. Times are passed in, never read from the clock.

Each item is checked as it arrives (HTTP status, size, headers, encoding,
that it is the item asked for), and the signed ``tcbInfo`` and
``enclaveIdentity`` JSON values are kept as the exact text of the response
body, since Intel's signatures cover those bytes. Signatures and chains are
checked later by :func:`confide.attestation.verify_quote`.

Every failure raises :class:`~confide.errors.FetchError` naming the URL and
the reason.

Example::

    >>> from datetime import datetime, timezone
    >>> from pathlib import Path
    >>> client = CollateralClient(  # doctest: +SKIP
    ...     "https://api.trustedservices.intel.com",
    ...     HttpxFetcher(),
    ...     cache=CollateralCache(Path.home() / ".cache" / "confide" / "collateral"),
    ... )
    >>> now = datetime.now(timezone.utc)  # doctest: +SKIP
    >>> collateral = client.fetch(quote_bytes, now=now)  # doctest: +SKIP
    >>> verify_quote(quote_bytes, collateral, now=now)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID

from confide.errors import FetchError, FormatError, UsageError

from ._collateral import MAX_CHAIN_LENGTH, MAX_COLLATERAL_SIZE, Collateral, QeIdentity, TcbInfo
from ._pck import PckExtensions
from ._quote import Quote

__all__ = [
    "DEFAULT_TIMEOUT",
    "INTEL_PCS_URL",
    "INTEL_ROOT_CA_CRL_URL",
    "MAX_HEADER_SIZE",
    "MAX_JSON_BODY_SIZE",
    "MAX_RESPONSE_SIZE",
    "CollateralCache",
    "CollateralClient",
    "FetchResponse",
    "Fetcher",
    "HttpxFetcher",
]

#: Seconds allowed for each request (connect, read, write and pool wait each).
DEFAULT_TIMEOUT: Final = 10.0
#: Largest response body read; PCK CRLs are the largest items (hex doubles them).
MAX_RESPONSE_SIZE: Final = 4 * 1024 * 1024
#: Largest TCB info or QE identity response body.
MAX_JSON_BODY_SIZE: Final = MAX_COLLATERAL_SIZE
#: Largest issuer chain header (a URL-encoded PEM chain is about 3 KiB).
MAX_HEADER_SIZE: Final = 64 * 1024
#: Largest cache file read back (base64 body plus headers and metadata).
MAX_CACHE_FILE_SIZE: Final = 2 * MAX_RESPONSE_SIZE
#: How much of an error body is quoted in a :class:`FetchError`.
ERROR_EXCERPT_SIZE: Final = 160

INTEL_PCS_URL: Final = "https://api.trustedservices.intel.com"
#: The CRL distribution point of Intel's SGX Root CA (what Intel's PCS users fetch).
INTEL_ROOT_CA_CRL_URL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_INTEL_PCS_HOSTS: Final = frozenset({"api.trustedservices.intel.com"})

PCK_CRL_CHAIN_HEADER: Final = "SGX-PCK-CRL-Issuer-Chain"
TCB_INFO_CHAIN_HEADER: Final = "TCB-Info-Issuer-Chain"
#: The API v3 name, still sent by some PCCS versions.
TCB_INFO_CHAIN_HEADER_V3: Final = "SGX-TCB-Info-Issuer-Chain"
QE_IDENTITY_CHAIN_HEADER: Final = "SGX-Enclave-Identity-Issuer-Chain"
#: Only these headers are kept in the cache.
_CACHED_HEADERS: Final = (
    PCK_CRL_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER_V3,
    QE_IDENTITY_CHAIN_HEADER,
)
#: Headers Intel's PCS sets on error responses, quoted in the error.
_ERROR_HEADERS: Final = ("Error-Code", "Error-Message")

_CACHE_FORMAT: Final = 1
_WS: Final = re.compile(r"[ \t\n\r]*")
_HEX_BODY: Final = re.compile(rb"\s*((?:[0-9A-Fa-f]{2})+)\s*")
_PEM_CRL: Final = re.compile(
    rb"\s*-----BEGIN X509 CRL-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END X509 CRL-----\s*"
)


class _Expiring(Protocol):
    @property
    def expires(self) -> datetime | None: ...


_T = TypeVar("_T", bound=_Expiring)


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
            raise FetchError(url, f"timed out after {timeout:g} s ({_line(exc)})") from exc
        except httpx.ConnectError as exc:
            raise FetchError(url, f"could not connect: {_line(exc)}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(url, f"{type(exc).__name__}: {_line(exc)}") from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _line(value: object, limit: int = ERROR_EXCERPT_SIZE) -> str:
    """One printable line of at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    text = text or "no detail"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _aware(now: object) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    return now


class CollateralCache:
    """Fetched responses on disk, keyed by URL, each kept until its own ``nextUpdate``.

    One file per URL (named by the URL's SHA-256) holds the body, the issuer
    chain headers and the expiry. :meth:`get` returns an entry only while
    ``now`` is before its expiry; a missing, unreadable or corrupt file is a
    miss. Writes are atomic (a temporary file, then ``os.replace``); the
    directory is created 0700 and files are 0600.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, url: str) -> Path:
        return self.directory / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def get(self, url: str, *, now: datetime) -> FetchResponse | None:
        now = _aware(now)
        try:
            with self.path_for(url).open("rb") as f:
                raw = f.read(MAX_CACHE_FILE_SIZE + 1)
        except OSError:
            return None
        if len(raw) > MAX_CACHE_FILE_SIZE:
            return None
        try:
            entry = json.loads(raw)
            if (
                not isinstance(entry, dict)
                or entry.get("format") != _CACHE_FORMAT
                or entry.get("url") != url
            ):
                return None
            expires = datetime.fromisoformat(entry["expires"])
            headers = entry["headers"]
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                return None
            body = base64.b64decode(entry["body"], validate=True)
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        if expires.tzinfo is None or not now < expires:
            return None
        return FetchResponse(200, headers, body)

    def _make_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            mode = self.directory.stat().st_mode
            if not stat.S_ISDIR(mode) or mode & 0o022:
                raise UsageError(
                    f"the collateral cache {self.directory} is not a directory only its "
                    f"owner can write (mode {stat.S_IMODE(mode):o}); use a private directory"
                ) from None

    def put(self, url: str, response: FetchResponse, *, expires: datetime) -> None:
        """Store ``response`` for ``url`` until ``expires``; raise :class:`UsageError` if the
        cache directory cannot be written."""
        expires = _aware(expires)
        entry = {
            "format": _CACHE_FORMAT,
            "url": url,
            "expires": expires.isoformat(),
            "headers": {
                name: response.headers[name] for name in _CACHED_HEADERS if name in response.headers
            },
            "body": base64.b64encode(response.body).decode(),
        }
        data = json.dumps(entry).encode()
        tmp: str | None = None
        try:
            self._make_directory()
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path_for(url))
            tmp = None
        except OSError as exc:
            raise UsageError(
                f"cannot write the collateral cache in {self.directory}: {_line(exc)}"
            ) from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


@dataclass(frozen=True, slots=True)
class _Crl:
    der: bytes
    issuer_chain: str
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class _Signed:
    raw: str
    signature: bytes
    issuer_chain: str
    expires: datetime


def _json_members(url: str, body: bytes, required: tuple[str, ...]) -> dict[str, str]:
    """The exact text of each top-level member of the JSON object ``body``.

    Values are located with the decoder's spans, never re-serialized, so each
    returned string is byte-for-byte what the server signed. Rejects anything
    that is not one JSON object, duplicate keys at any depth, NaN/Infinity,
    bodies over :data:`MAX_JSON_BODY_SIZE` and missing ``required`` members.
    """
    if len(body) > MAX_JSON_BODY_SIZE:
        raise FetchError(url, f"response body over {MAX_JSON_BODY_SIZE} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError(url, "malformed body: not UTF-8") from None

    def bad(detail: str) -> FetchError:
        return FetchError(url, f"malformed JSON body: {detail}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    decoder = json.JSONDecoder(object_pairs_hook=no_duplicates, parse_constant=no_constant)

    def skip(pos: int) -> int:
        m = _WS.match(text, pos)
        return m.end() if m else pos

    def expect(pos: int, char: str) -> int:
        if text[pos : pos + 1] != char:
            found = repr(text[pos]) if pos < len(text) else "end of body"
            raise bad(f"expected {char!r} at offset {pos}, found {found}")
        return pos + 1

    members: dict[str, str] = {}
    try:
        pos = expect(skip(0), "{")
        pos = skip(pos)
        if text[pos : pos + 1] == "}":
            pos += 1
        else:
            while True:
                expect(pos, '"')
                key, pos = decoder.raw_decode(text, pos)  # a string: it starts with '"'
                pos = expect(skip(pos), ":")
                start = skip(pos)
                _, pos = decoder.raw_decode(text, start)
                if key in members:
                    raise bad(f"duplicate key {key!r}")
                members[key] = text[start:pos]
                pos = skip(pos)
                if text[pos : pos + 1] == ",":
                    pos = skip(pos + 1)
                    continue
                pos = expect(pos, "}")
                break
    except (ValueError, RecursionError) as exc:
        raise bad(_line(exc)) from None
    if skip(pos) != len(text):
        raise bad(f"trailing data at offset {skip(pos)}")
    for key in required:
        if key not in members:
            raise bad(f"missing member {key!r}")
    return members


def _issuer_chain(url: str, response: FetchResponse, names: tuple[str, ...]) -> str:
    """The URL-encoded PEM chain from the first of ``names`` present, decoded and checked."""
    for name in names:
        if name in response.headers:
            value = response.headers[name]
            break
    else:
        raise FetchError(url, f"missing header {names[0]}")
    if len(value) > MAX_HEADER_SIZE:
        raise FetchError(url, f"header {name} over {MAX_HEADER_SIZE} bytes")
    try:
        # Plain unquote: '+' is a base64 character here, not a space.
        pem = unquote(value, errors="strict")
        certs = x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, UnicodeError) as exc:
        raise FetchError(url, f"header {name} is not a PEM chain: {_line(exc)}") from None
    if not 1 <= len(certs) <= MAX_CHAIN_LENGTH:
        raise FetchError(
            url, f"header {name} holds {len(certs)} certificates, expected 1 to {MAX_CHAIN_LENGTH}"
        )
    return pem


def _check_status(url: str, response: FetchResponse) -> None:
    if response.status == 200:
        return
    detail = [f"{h}: {response.headers[h]}" for h in _ERROR_HEADERS if h in response.headers]
    excerpt = response.body[: ERROR_EXCERPT_SIZE * 4].decode("utf-8", "replace")
    if excerpt.strip():
        detail.append(excerpt)
    reason = f"HTTP {response.status}"
    if detail:
        reason += ": " + _line("; ".join(detail))
    raise FetchError(url, reason)


def _crl_der(url: str, body: bytes) -> tuple[bytes, x509.CertificateRevocationList]:
    """A CRL body as DER: accepts DER, hex-encoded DER (PCCS) or one PEM block."""
    if len(body) > MAX_RESPONSE_SIZE:
        raise FetchError(url, f"response body over {MAX_RESPONSE_SIZE} bytes")
    der = body
    if m := _HEX_BODY.fullmatch(body):
        der = bytes.fromhex(m.group(1).decode())
    elif m := _PEM_CRL.fullmatch(body):
        try:
            der = base64.b64decode(re.sub(rb"\s", b"", m.group(1)), validate=True)
        except binascii.Error:
            raise FetchError(url, "malformed body: bad base64 in PEM CRL") from None
    try:
        return der, x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise FetchError(url, f"malformed body: not a CRL ({_line(exc)})") from None


def _cn(name: x509.Name) -> str:
    return ", ".join(str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME))


def _parse_pck_crl(ca: str) -> Callable[[str, FetchResponse], _Crl]:
    def parse(url: str, response: FetchResponse) -> _Crl:
        _check_status(url, response)
        der, crl = _crl_der(url, response.body)
        chain = _issuer_chain(url, response, (PCK_CRL_CHAIN_HEADER,))
        issuer = x509.load_pem_x509_certificates(chain.encode())[0]
        if issuer.subject != crl.issuer or ca.capitalize() not in _cn(crl.issuer):
            raise FetchError(
                url,
                f"wrong content: a CRL issued by {_cn(crl.issuer)!r} with chain for "
                f"{_cn(issuer.subject)!r}, expected the PCK {ca.capitalize()} CA's",
            )
        return _Crl(der, chain, crl.next_update_utc)

    return parse


def _parse_root_crl(url: str, response: FetchResponse) -> _Crl:
    _check_status(url, response)
    der, crl = _crl_der(url, response.body)
    return _Crl(der, "", crl.next_update_utc)


def _parse_signed(
    member: str,
    headers: tuple[str, ...],
    check: Callable[[str], tuple[datetime, str | None]],
) -> Callable[[str, FetchResponse], _Signed]:
    """A parser for ``{"<member>": {...}, "signature": "<hex>"}`` responses.

    ``check`` parses the raw member and returns its ``nextUpdate`` and, when
    the item is not the one asked for, why.
    """

    def parse(url: str, response: FetchResponse) -> _Signed:
        _check_status(url, response)
        members = _json_members(url, response.body, (member, "signature"))
        raw = members[member]
        if not raw.startswith("{"):
            raise FetchError(url, f"malformed JSON body: {member!r} is not an object")
        sig_text = json.loads(members["signature"])
        if not isinstance(sig_text, str):
            raise FetchError(url, "malformed JSON body: 'signature' is not a string")
        try:
            signature = bytes.fromhex(sig_text)
        except ValueError:
            raise FetchError(url, "malformed JSON body: 'signature' is not hex") from None
        if len(signature) != 64:
            raise FetchError(
                url, f"malformed JSON body: 'signature' is {len(signature)} bytes, expected 64"
            )
        try:
            expires, wrong = check(raw)
        except FormatError as exc:
            raise FetchError(url, f"malformed {member}: {_line(exc, 300)}") from None
        if wrong:
            raise FetchError(url, f"wrong content: {wrong}")
        return _Signed(raw, signature, _issuer_chain(url, response, headers), expires)

    return parse


def _check_tcb_info(tee: str, fmspc: bytes) -> Callable[[str], tuple[datetime, str | None]]:
    def check(raw: str) -> tuple[datetime, str | None]:
        info = TcbInfo.from_json(raw)
        if info.id != tee.upper() or info.fmspc != fmspc:
            return info.next_update, (
                f"TCB info {info.id} for FMSPC {info.fmspc.hex().upper()}, "
                f"expected {tee.upper()} for {fmspc.hex().upper()}"
            )
        return info.next_update, None

    return check


def _check_qe_identity(tee: str) -> Callable[[str], tuple[datetime, str | None]]:
    expected = "TD_QE" if tee == "tdx" else "QE"

    def check(raw: str) -> tuple[datetime, str | None]:
        identity = QeIdentity.from_json(raw)
        if identity.id != expected:
            return identity.next_update, f"QE identity {identity.id}, expected {expected}"
        return identity.next_update, None

    return check


def _pck_ca(quote: Quote) -> tuple[str, bytes]:
    """Which PCK CA issued the quote's PCK certificate (``processor`` or ``platform``),
    and the platform's FMSPC."""
    try:
        chain = x509.load_pem_x509_certificates(quote.certification.pck_cert_chain)
    except ValueError as exc:
        raise FormatError(
            "quote.pck_chain", "the PCK chain in the quote is not PEM", detail=_line(exc)
        ) from None
    leaf = chain[0]
    issuer = _cn(leaf.issuer)
    if "Processor" in issuer:
        ca = "processor"
    elif "Platform" in issuer:
        ca = "platform"
    else:
        raise FormatError(
            "quote.pck_issuer",
            "unknown PCK CA",
            observed=issuer,
            expected="Intel SGX PCK Processor CA or Platform CA",
        )
    return ca, PckExtensions.from_certificate(leaf).fmspc


class CollateralClient:
    """Fetches the collateral for a quote from a PCCS or Intel's PCS (API v4).

    ``base_url`` is the service root, e.g. ``https://api.trustedservices.intel.com``
    or ``https://pccs.example:8081``. The root CA CRL comes from
    ``root_ca_crl_url``: by default Intel's CRL distribution point when
    ``base_url`` is Intel's PCS, else the PCCS's ``/sgx/certification/v4/rootcacrl``.
    Each request has ``timeout`` seconds. With a ``cache``, an item is reused
    until its own ``nextUpdate``.
    """

    def __init__(
        self,
        base_url: str,
        fetcher: Fetcher,
        *,
        cache: CollateralCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        root_ca_crl_url: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
            raise UsageError(f"not a PCS or PCCS base URL: {base_url!r}")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        if root_ca_crl_url is None:
            if parts.hostname in _INTEL_PCS_HOSTS:
                root_ca_crl_url = INTEL_ROOT_CA_CRL_URL
            else:
                root_ca_crl_url = f"{self.base_url}/sgx/certification/v4/rootcacrl"
        self.root_ca_crl_url = root_ca_crl_url
        self.timeout = timeout
        self._fetcher = fetcher
        self._cache = cache

    def fetch(self, quote: Quote | bytes, *, now: datetime) -> Collateral:
        """Fetch (or take from the cache) everything needed to verify ``quote`` at ``now``.

        Raises :class:`FetchError` naming the URL when an item cannot be
        fetched or is malformed, and :class:`FormatError` when the quote itself
        is.
        """
        now = _aware(now)
        if not isinstance(quote, Quote):
            quote = Quote.from_bytes(quote)
        tee = "tdx" if quote.is_tdx else "sgx"
        ca, fmspc = _pck_ca(quote)
        base = self.base_url
        pck_crl = self._item(
            f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
            _parse_pck_crl(ca),
            now,
        )
        tcb = self._item(
            f"{base}/{tee}/certification/v4/tcb?fmspc={fmspc.hex().upper()}",
            _parse_signed(
                "tcbInfo",
                (TCB_INFO_CHAIN_HEADER, TCB_INFO_CHAIN_HEADER_V3),
                _check_tcb_info(tee, fmspc),
            ),
            now,
        )
        qe = self._item(
            f"{base}/{tee}/certification/v4/qe/identity",
            _parse_signed("enclaveIdentity", (QE_IDENTITY_CHAIN_HEADER,), _check_qe_identity(tee)),
            now,
        )
        root_crl = self._item(self.root_ca_crl_url, _parse_root_crl, now)
        return Collateral.from_parts(
            pck_crl_issuer_chain=pck_crl.issuer_chain,
            root_ca_crl=root_crl.der,
            pck_crl=pck_crl.der,
            tcb_info_issuer_chain=tcb.issuer_chain,
            tcb_info=tcb.raw,
            tcb_info_signature=tcb.signature,
            qe_identity_issuer_chain=qe.issuer_chain,
            qe_identity=qe.raw,
            qe_identity_signature=qe.signature,
        )

    def _item(self, url: str, parse: Callable[[str, FetchResponse], _T], now: datetime) -> _T:
        if self._cache is not None:
            cached = self._cache.get(url, now=now)
            if cached is not None:
                try:
                    item = parse(url, cached)
                except FetchError:
                    pass  # a corrupt entry: fetch again and overwrite it
                else:
                    if item.expires is not None and now < item.expires:
                        return item
        response = self._fetcher.get(url, timeout=self.timeout)
        item = parse(url, response)
        if self._cache is not None and item.expires is not None and now < item.expires:
            self._cache.put(url, response, expires=item.expires)
        return item
