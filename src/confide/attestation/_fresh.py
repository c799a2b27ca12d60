"""Fresh attestation: a new quote that answers one client's nonce on one TLS connection.

An RA-TLS certificate's quote is made once, at launch, and the certificate is
valid for days: it proves what the enclave was, not that it answers now. The
challenge asks the enclave for a new quote on the very connection the client
verified the certificate on (ADR 0021).

Wire format (HTTP/1.1 or HTTP/2, over the RA-TLS connection; TLS 1.3 only)::

    POST /.well-known/confide/challenge
    Content-Type: application/octet-stream
    Content-Length: 32
    <nonce: exactly NONCE_SIZE = 32 random bytes>

    200 OK
    Content-Type: application/octet-stream
    <the raw DCAP quote: 1 to MAX_QUOTE_SIZE bytes>

A nonce of another size answers 400, a connection that is not TLS 1.3 or not
on the RA-TLS certificate 421, over :data:`MAX_CHALLENGES_PER_CONNECTION` on
one connection or over the per-source rate 429 (each answer costs a quote).
Refusals are JSON ``{"error": code, "message": text}``.

The answer's 64 bytes of report data::

    [0:32]  SHA-256("confide-fresh-v1 nonce" || 0x00 || nonce)
    [32:64] SHA-256("confide-fresh-v1 channel" || 0x00 || SHA-256(certificate DER)
                    || len(binding) as one byte || binding)

``binding`` is the connection's channel binding as both ends read it from
Python's :mod:`ssl` (``get_channel_binding("tls-unique")``: on TLS 1.3 the
client's Finished verify_data, a MAC over the whole handshake transcript under
a key from its ECDHE secret, 32 or 48 bytes); the certificate's hash binds its
key and the very certificate the handshake used. The tags keep both halves
apart from each other and from the RA-TLS layout (``SHA-256(key point) ||
32 bytes``), so the certificate's own quote never passes for an answer. Each
half checked on its own names what is wrong: the nonce half alone differs, an
answer to another nonce (``fresh.nonce``); the channel half alone, an answer
relayed from another connection or certificate (``fresh.relayed``); both, an
earlier answer replayed (``fresh.replayed``).

:func:`verify_fresh_answer` has no I/O and takes the time as a parameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.errors import FormatError, FreshnessError, UsageError

from ._collateral import Collateral
from ._policy import Check, Policy, VerifiedQuote
from ._quote import MAX_QUOTE_SIZE, Quote
from ._verify import verify_quote

#: Where the runtime answers challenges (a path no app can serve instead).
CHALLENGE_PATH: Final = "/.well-known/confide/challenge"
#: The largest answer (a quote) a client reads.
MAX_ANSWER_SIZE: Final = MAX_QUOTE_SIZE
#: The nonce: exactly this many random bytes (no fewer: it must never repeat).
NONCE_SIZE: Final = 32
#: Challenges one connection may ask (a client needs one; each costs a quote).
MAX_CHALLENGES_PER_CONNECTION: Final = 4
#: The channel binding's size bounds (TLS 1.3 Finished: 32 for SHA-256, 48 for SHA-384).
MIN_BINDING_SIZE: Final = 32
MAX_BINDING_SIZE: Final = 64
_NONCE_TAG: Final = b"confide-fresh-v1 nonce\x00"
_CHANNEL_TAG: Final = b"confide-fresh-v1 channel\x00"


def _nonce_half(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE:
        raise UsageError(f"the nonce must be exactly {NONCE_SIZE} bytes, got {len(nonce)}")
    return hashlib.sha256(_NONCE_TAG + nonce).digest()


def _channel_half(certificate_der: bytes, binding: bytes) -> bytes:
    if not MIN_BINDING_SIZE <= len(binding) <= MAX_BINDING_SIZE:
        raise UsageError(
            f"the channel binding must be {MIN_BINDING_SIZE} to {MAX_BINDING_SIZE} bytes, "
            f"got {len(binding)}"
        )
    cert_hash = hashlib.sha256(certificate_der).digest()
    return hashlib.sha256(_CHANNEL_TAG + cert_hash + bytes([len(binding)]) + binding).digest()


def fresh_report_data(nonce: bytes, certificate_der: bytes, binding: bytes) -> bytes:
    """The 64 bytes of report data answering ``nonce`` on the connection of ``binding``
    made with the certificate ``certificate_der`` (the layout in the module's description)."""
    return _nonce_half(nonce) + _channel_half(certificate_der, binding)


@dataclass(frozen=True, slots=True)
class FreshAnswer:
    """One challenge as the client made it: what it sent, where, and what came back."""

    nonce: bytes
    #: The connection's channel binding, as the client read it.
    binding: bytes
    #: The answer's body: the new quote (not verified yet).
    quote: bytes
    #: The TLS version of the connection (``TLSv1.3`` is required).
    tls_version: str


@dataclass(frozen=True, slots=True)
class FreshVerified:
    """What a verified challenge answer proved: the certificate's enclave quoted this nonce,
    made just before, on this very connection (so after the nonce was made)."""

    quote: VerifiedQuote
    nonce: bytes
    binding: bytes


def verify_fresh_answer(
    answer: FreshAnswer,
    *,
    certificate: x509.Certificate,
    enclave: VerifiedQuote,
    collateral: Collateral,
    now: datetime,
    policy: Policy,
    trust_anchor: x509.Certificate | None = None,
) -> FreshVerified:
    """Verify ``answer`` against the enclave of ``certificate`` (verified as ``enclave``).

    Checks, in order: the connection was TLS 1.3 (``fresh.tls_version``); the
    answer parses (``fresh.format``); it is a genuine quote under ``policy`` and
    ``collateral`` (the codes of :func:`verify_quote`); it comes from the same
    enclave as the certificate, every field of its report but the report data
    equal (``fresh.enclave``); its report data is this nonce on this
    connection with this certificate (``fresh.nonce``, ``fresh.relayed``,
    ``fresh.replayed``: see the module's description). Raises
    :class:`~confide.errors.FreshnessError` (or the quote's own error).
    """
    if answer.tls_version != "TLSv1.3":
        raise FreshnessError(
            "fresh.tls_version",
            "the challenge connection is not TLS 1.3, so its channel binding is not sound",
            observed=answer.tls_version,
            expected="TLSv1.3",
        )
    if not answer.quote or len(answer.quote) > MAX_ANSWER_SIZE:
        raise FormatError(
            "fresh.format",
            "the challenge answer is not a quote of an acceptable size",
            observed=f"{len(answer.quote)} bytes",
            expected=f"1 to {MAX_ANSWER_SIZE}",
        )
    try:
        quote = Quote.from_bytes(answer.quote)
    except FormatError as exc:
        raise FormatError(
            "fresh.format", "the challenge answer is not a quote", detail=exc.check
        ) from None
    verified = verify_quote(quote, collateral, now=now, policy=policy, trust_anchor=trust_anchor)
    body = enclave.quote.body
    if dataclasses.replace(quote.body, report_data=body.report_data) != body:
        raise FreshnessError(
            "fresh.enclave",
            "the challenge was answered by another enclave than the certificate's",
            observed=getattr(quote.body, "mr_enclave", None),
            expected=getattr(body, "mr_enclave", None),
            hint="another launch, or another code, answered on this connection",
        )
    der = certificate.public_bytes(Encoding.DER)
    nonce_ok = quote.report_data[:32] == _nonce_half(answer.nonce)
    channel_ok = quote.report_data[32:] == _channel_half(der, answer.binding)
    if not nonce_ok and not channel_ok:
        raise FreshnessError(
            "fresh.replayed",
            "the challenge answer is for neither this nonce nor this connection: it is replayed",
            observed=quote.report_data,
            expected=fresh_report_data(answer.nonce, der, answer.binding),
            hint="nothing was sent; something between you and the enclave replays old answers",
        )
    if not nonce_ok:
        raise FreshnessError(
            "fresh.nonce",
            "the challenge answer is for another nonce than the one sent",
            observed=quote.report_data[:32],
            expected=_nonce_half(answer.nonce),
            hint="nothing was sent; the enclave answered another challenge",
        )
    if not channel_ok:
        raise FreshnessError(
            "fresh.relayed",
            "the challenge answer was made for another TLS connection or certificate",
            observed=quote.report_data[32:],
            expected=_channel_half(der, answer.binding),
            hint="nothing was sent; the answer was relayed from another connection to the "
            "enclave, so this connection's peer may not be it",
        )
    check = Check(
        "fresh quote binds this nonce, this connection and this certificate",
        "passed",
        answer.nonce.hex(),
    )
    return FreshVerified(
        dataclasses.replace(verified, checks=(*verified.checks, check)),
        answer.nonce,
        answer.binding,
    )
