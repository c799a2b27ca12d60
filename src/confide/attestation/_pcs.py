"""Parsing PCS/PCCS (API v4) responses: each item checked as it arrives.

HTTP status, size, headers, encoding and that it is the item asked for; the
signed ``tcbInfo`` and ``enclaveIdentity`` JSON values are kept as the exact
text of the response body, since Intel's signatures cover those bytes.
Signatures and chains are checked later by :func:`confide.attestation.verify_quote`.
Every failure raises :class:`~confide.errors.FetchError` naming the URL and the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

from confide.errors import FetchError, FormatError, JsonError
from confide.strictjson import loads

from ._collateral import MAX_CHAIN_LENGTH, MAX_COLLATERAL_SIZE, QeIdentity, TcbInfo
from ._fetcher import (
    ERROR_EXCERPT_SIZE,
    MAX_HEADER_SIZE,
    MAX_RESPONSE_SIZE,
    FetchResponse,
    one_line,
)
from ._pck import PckExtensions
from ._quote import Quote

#: Largest TCB info or QE identity response body.
MAX_JSON_BODY_SIZE: Final = MAX_COLLATERAL_SIZE

PCK_CRL_CHAIN_HEADER: Final = "SGX-PCK-CRL-Issuer-Chain"
TCB_INFO_CHAIN_HEADER: Final = "TCB-Info-Issuer-Chain"
#: The API v3 name, still sent by some PCCS versions.
TCB_INFO_CHAIN_HEADER_V3: Final = "SGX-TCB-Info-Issuer-Chain"
QE_IDENTITY_CHAIN_HEADER: Final = "SGX-Enclave-Identity-Issuer-Chain"
#: Only these headers are kept in the cache.
CACHED_HEADERS: Final = (
    PCK_CRL_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER_V3,
    QE_IDENTITY_CHAIN_HEADER,
)
#: Headers Intel's PCS sets on error responses, quoted in the error.
_ERROR_HEADERS: Final = ("Error-Code", "Error-Message")

_WS: Final = re.compile(r"[ \t\n\r]*")
_HEX_BODY: Final = re.compile(rb"\s*((?:[0-9A-Fa-f]{2})+)\s*")
_PEM_CRL: Final = re.compile(
    rb"\s*-----BEGIN X509 CRL-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END X509 CRL-----\s*"
)


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


def json_members(url: str, body: bytes, required: tuple[str, ...]) -> dict[str, str]:
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

    decoder = json.JSONDecoder()  # the spans; strictjson judges the whole body below

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
                members[key] = text[start:pos]
                pos = skip(pos)
                if text[pos : pos + 1] == ",":
                    pos = skip(pos + 1)
                    continue
                pos = expect(pos, "}")
                break
    except (ValueError, RecursionError) as exc:
        raise bad(one_line(exc)) from None
    if skip(pos) != len(text):
        raise bad(f"trailing data at offset {skip(pos)}")
    try:  # no repeated key at any depth, no NaN, bounded depth
        loads(text, what="the body", max_bytes=MAX_JSON_BODY_SIZE)
    except JsonError as exc:
        raise bad(exc.message) from None
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
        raise FetchError(url, f"header {name} is not a PEM chain: {one_line(exc)}") from None
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
        reason += ": " + one_line("; ".join(detail))
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
        raise FetchError(url, f"malformed body: not a CRL ({one_line(exc)})") from None


def _cn(name: x509.Name) -> str:
    return ", ".join(str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME))


def parse_pck_crl(ca: str) -> Callable[[str, FetchResponse], _Crl]:
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


def parse_root_crl(url: str, response: FetchResponse) -> _Crl:
    _check_status(url, response)
    der, crl = _crl_der(url, response.body)
    return _Crl(der, "", crl.next_update_utc)


def parse_signed(
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
        members = json_members(url, response.body, (member, "signature"))
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
            raise FetchError(url, f"malformed {member}: {one_line(exc, 300)}") from None
        if wrong:
            raise FetchError(url, f"wrong content: {wrong}")
        return _Signed(raw, signature, _issuer_chain(url, response, headers), expires)

    return parse


def check_tcb_info(tee: str, fmspc: bytes) -> Callable[[str], tuple[datetime, str | None]]:
    def check(raw: str) -> tuple[datetime, str | None]:
        info = TcbInfo.from_json(raw)
        if info.id != tee.upper() or info.fmspc != fmspc:
            return info.next_update, (
                f"TCB info {info.id} for FMSPC {info.fmspc.hex().upper()}, "
                f"expected {tee.upper()} for {fmspc.hex().upper()}"
            )
        return info.next_update, None

    return check


def check_qe_identity(tee: str) -> Callable[[str], tuple[datetime, str | None]]:
    expected = "TD_QE" if tee == "tdx" else "QE"

    def check(raw: str) -> tuple[datetime, str | None]:
        identity = QeIdentity.from_json(raw)
        if identity.id != expected:
            return identity.next_update, f"QE identity {identity.id}, expected {expected}"
        return identity.next_update, None

    return check


def pck_ca(quote: Quote) -> tuple[str, bytes]:
    """Which PCK CA issued the quote's PCK certificate (``processor`` or ``platform``),
    and the platform's FMSPC."""
    try:
        chain = x509.load_pem_x509_certificates(quote.certification.pck_cert_chain)
    except ValueError as exc:
        raise FormatError(
            "quote.pck_chain", "the PCK chain in the quote is not PEM", detail=one_line(exc)
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
