"""Tamper matrix: every piece of evidence the verifier relies on, changed one at a time.

Each row takes the inputs of a real vector that verifies (the SGX set
``sgx-dcapqvl-00A067110000`` at its verification time, or the TDX set where the
field is TDX-specific), changes one thing, and names the exact exception class
and ``code`` the verifier must raise. A row whose tamper leaves the inputs
unchanged fails, so the matrix cannot pass vacuously.

Where each code of the verification core (``_verify``, ``_tcb``) is covered:

- here, on real evidence: the quote, QE report and PCK chain signatures and
  bindings (``quote.*``, ``qe_report.*``, ``pck.signature`` / ``.format`` /
  ``.length``, ``pck_ca.signature``, ``pck_chain.root``), the issuer chains
  (``*.root``, ``*.length``, ``*.signature``), the trust anchor
  (``root_ca.issuer_not_ca`` / ``.signature`` / windows), the signed items and
  CRLs (``*.signature``, ``pck_crl.issuer``, their windows), the signing
  certificates' windows reachable with real collateral, ``tcb_info.fmspc`` by
  mixing epochs, and ``collateral.tee_type``;
- ``tests/unit/tee/test_simulation.py`` (``CASES``, collateral re-signed by the
  simulated PKI, dcap-qvl as oracle): revocation of every certificate
  (``*.revoked``), the PCK, PCK CA and issuer chain windows that real
  collateral outlives, ``*.next_update``, ``pck.issuer_not_ca``, ``pck.key``,
  ``tcb_info.key`` / ``qe_identity.key``, ``quote.attestation_key``,
  ``tcb_info.fmspc`` / ``.pce_id``, the QE's match to its identity
  (``qe_identity.mrsigner`` ... ``.debug``, ``.no_level``), ``tcb.revoked`` and
  ``tcb.no_level``; ``simulation.root`` / ``.not_allowed`` in the tests
  beside that table;
- ``test_verify_tdx_module.py``: ``tdx_module.*``, ``tcb_info.tdx_module`` and the
  convergence of module ratings (on the verifier's internals: nothing can
  re-sign TDX evidence).

``pck_ca``, ``pck_crl_issuer``, ``tcb_signing_cert`` and
``qe_identity_signing_cert.issuer_not_ca`` are unreachable: their issuer is the
trust anchor, which ``root_ca.issuer_not_ca`` has refused first if it is no CA.
Parser and policy codes have their own tables (``test_quote``,
``test_collateral``, ``test_pck``, ``test_policy``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.attestation import Collateral, Policy, Quote, TcbStatus, verify_quote
from confide.errors import (
    AttestationError,
    CertificateError,
    CollateralError,
    FormatError,
    SignatureError,
)
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
TDX = "tdx-dcapqvl-B0C06F000000"
AUTOMATA = "sgx-automata-00606A000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
ONE_SECOND = timedelta(seconds=1)

#: Every status but Revoked: the matrix is about evidence, not about the policy.
ACCEPT_ALL = Policy.accepting(s.value for s in TcbStatus if s is not TcbStatus.REVOKED)

# Byte layout of the signed regions (Intel DCAP quote format).
HEADER_FIELDS = (
    ("version", 2),
    ("attestation_key_type", 2),
    ("tee_type", 4),
    ("qe_svn", 2),
    ("pce_svn", 2),
    ("qe_vendor_id", 16),
    ("user_data", 20),
)
SGX_REPORT_FIELDS = (
    ("cpu_svn", 16),
    ("misc_select", 4),
    ("reserved1", 12),
    ("isv_ext_prod_id", 16),
    ("attributes", 16),
    ("mr_enclave", 32),
    ("reserved2", 32),
    ("mr_signer", 32),
    ("reserved3", 32),
    ("config_id", 64),
    ("isv_prod_id", 2),
    ("isv_svn", 2),
    ("config_svn", 2),
    ("reserved4", 42),
    ("isv_family_id", 16),
    ("report_data", 64),
)
TD_REPORT_FIELDS = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rtmr0", 48),
    ("rtmr1", 48),
    ("rtmr2", 48),
    ("rtmr3", 48),
    ("report_data", 64),
)
HEADER_SIZE = 48


def _offsets(fields: tuple[tuple[str, int], ...], start: int) -> dict[str, tuple[int, int]]:
    out, pos = {}, start
    for name, size in fields:
        out[name] = (pos, size)
        pos += size
    return out


@dataclass(frozen=True)
class Inputs:
    """Everything ``verify_quote`` takes; the collateral as its JSON object."""

    quote: bytes
    collateral: dict[str, str]
    now: datetime
    #: The vector loader of ``conftest``, for rows that borrow another set's evidence.
    vectors: Callable[[str], VectorSet] = dataclasses.field(compare=False)
    trust_anchor: x509.Certificate | None = None


Tamper = Callable[[Inputs], Inputs]


@dataclass(frozen=True)
class Row:
    name: str
    tamper: Tamper
    error: type[AttestationError]
    code: str
    base: str = SGX


COLLATERAL_KEYS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


def _inputs(load_vector: Callable[[str], VectorSet], name: str) -> Inputs:
    v = load_vector(name)
    return Inputs(v.quote, json.loads(v.collateral_json), v.verification_time, load_vector)


def _verify(i: Inputs) -> None:
    verify_quote(
        i.quote,
        Collateral.from_json(json.dumps(i.collateral)),
        now=i.now,
        policy=ACCEPT_ALL,
        trust_anchor=i.trust_anchor,
    )


# -- tamper building blocks ---------------------------------------------------


def flip(offset: int, mask: int = 0x01) -> Tamper:
    """XOR one byte of the quote."""

    def tamper(i: Inputs) -> Inputs:
        raw = bytearray(i.quote)
        raw[offset] ^= mask
        return dataclasses.replace(i, quote=bytes(raw))

    return tamper


def flip_field(fields: dict[str, tuple[int, int]], name: str) -> Tamper:
    """Flip the lowest bit of the middle byte of a field region."""
    offset, size = fields[name]
    return flip(offset + size // 2)


def _qe_report_offset(raw: bytes) -> int:
    return raw.index(Quote.from_bytes(raw).certification.qe_report_bytes)


def flip_qe_report_field(name: str) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        offset, size = _offsets(SGX_REPORT_FIELDS, _qe_report_offset(i.quote))[name]
        return flip(offset + size // 2)(i)

    return tamper


def flip_qe_report_signature(i: Inputs) -> Inputs:
    return flip(_qe_report_offset(i.quote) + 384 + 10)(i)


def flip_qe_auth_data(i: Inputs) -> Inputs:
    return flip(_qe_report_offset(i.quote) + 384 + 64 + 2 + 5)(i)


def flip_quote_signature(i: Inputs) -> Inputs:
    return flip(i.quote.index(Quote.from_bytes(i.quote).signature) + 33)(i)


def flip_attestation_key(i: Inputs) -> Inputs:
    return flip(i.quote.index(Quote.from_bytes(i.quote).attestation_key) + 7)(i)


def with_pck_chain(edit: Callable[[list[bytes]], list[bytes]]) -> Tamper:
    """Re-encode the quote with its PCK chain (as DER certificates) edited."""

    def tamper(i: Inputs) -> Inputs:
        quote = Quote.from_bytes(i.quote)
        ders = _pem_blocks(quote.certification.pck_cert_chain)
        chain = b"".join(_pem(der) for der in edit(ders))
        cert = dataclasses.replace(quote.certification, pck_cert_chain=chain)
        return dataclasses.replace(
            i, quote=dataclasses.replace(quote, certification=cert).to_bytes()
        )

    return tamper


def _pem_blocks(pem: bytes) -> list[bytes]:
    out = []
    for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body = block.split(b"-----END CERTIFICATE-----")[0]
        out.append(base64.b64decode(b"".join(body.split())))
    return out


def _pem(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[k : k + 64] for k in range(0, len(b64), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def _chain_of(raw: bytes) -> bytes:
    return Quote.from_bytes(raw).certification.pck_cert_chain


def _flip_der(der: bytes, offset: int) -> bytes:
    out = bytearray(der)
    out[offset] ^= 0x01
    return bytes(out)


def edit_collateral(key: str, edit: Callable[[str], str]) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        return dataclasses.replace(i, collateral={**i.collateral, key: edit(i.collateral[key])})

    return tamper


def replace_text(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} does not occur"
        return text.replace(old, new, 1)

    return edit


def flip_hex(index: int) -> Callable[[str], str]:
    """Flip the lowest bit of byte ``index`` (negative counts from the end) of a hex field."""

    def edit(text: str) -> str:
        raw = bytearray(bytes.fromhex(text))
        raw[index] ^= 0x01
        return raw.hex()

    return edit


def crl_time_digit(which: str) -> Callable[[str], str]:
    """Change the last seconds digit of a CRL's thisUpdate: it still parses, the signature fails."""

    def edit(text: str) -> str:
        raw = bytes.fromhex(text)
        crl = x509.load_der_x509_crl(raw)
        when = crl.last_update_utc if which == "this" else crl.next_update_utc
        assert when is not None
        stamp = when.strftime("%y%m%d%H%M%SZ").encode()
        assert raw.count(stamp) == 1
        changed = stamp[:-2] + bytes([(stamp[-2] - 0x30 + 1) % 10 + 0x30]) + b"Z"
        return raw.replace(stamp, changed).hex()

    return edit


def truncate_hex(keep: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text[: 2 * keep]

    return edit


def take_from(name: str, *keys: str, file: str = "collateral.json") -> Tamper:
    """Replace collateral items with those of another vector set."""

    def tamper(i: Inputs) -> Inputs:
        other = json.loads(i.vectors(name).text(file))
        return dataclasses.replace(i, collateral={**i.collateral, **{k: other[k] for k in keys}})

    return tamper


def copy_item(source: str, target: str) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        return dataclasses.replace(i, collateral={**i.collateral, target: i.collateral[source]})

    return tamper


def first_cert_only(key: str) -> Tamper:
    return edit_collateral(key, lambda pem: pem.split("-----END CERTIFICATE-----")[0] + _END)


def reversed_chain(key: str) -> Tamper:
    def edit(pem: str) -> str:
        blocks = [b + _END for b in pem.split(_END) if b.strip()]
        return "".join(reversed(blocks))

    return edit_collateral(key, edit)


_END = "-----END CERTIFICATE-----\n"


def at_time(iso: str, delta: timedelta = timedelta()) -> Tamper:
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")) + delta

    def tamper(i: Inputs) -> Inputs:
        return dataclasses.replace(i, now=when)

    return tamper


def quote_of(name: str) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        return dataclasses.replace(i, quote=i.vectors(name).quote)

    return tamper


def then(*steps: Tamper) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        for step in steps:
            i = step(i)
        return i

    return tamper


def _self_signed_root(*, ca: bool = True) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not Intel SGX Root CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2000, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2099, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def anchor(*, ca: bool = True) -> Tamper:
    def tamper(i: Inputs) -> Inputs:
        return dataclasses.replace(i, trust_anchor=_self_signed_root(ca=ca))

    return tamper


def pck_ca_as_anchor(i: Inputs) -> Inputs:
    """The quote's PCK CA (a CA, but not self-signed) passed as the trust anchor."""
    return dataclasses.replace(i, trust_anchor=_certs(_chain_of(i.quote))[1])


def _another_root_der() -> bytes:
    return _self_signed_root().public_bytes(Encoding.DER)


def edit_chain(key: str, edit: Callable[[list[bytes]], list[bytes]]) -> Tamper:
    """Edit a collateral issuer chain as a list of DER certificates."""

    def pem(text: str) -> str:
        return b"".join(_pem(der) for der in edit(_pem_blocks(text.encode()))).decode()

    return edit_collateral(key, pem)


# -- the matrix ---------------------------------------------------------------

_HEADER = _offsets(HEADER_FIELDS, 0)
_SGX_BODY = _offsets(SGX_REPORT_FIELDS, HEADER_SIZE)
_TD_BODY = _offsets(TD_REPORT_FIELDS, HEADER_SIZE)

#: Header fields whose change the parser or the vendor check catches before the signature.
_HEADER_CODES: dict[str, tuple[type[AttestationError], str]] = {
    "version": (FormatError, "quote.version"),  # 3 -> 2 (SGX), 4 -> 5 (TDX, see below)
    "attestation_key_type": (FormatError, "quote.key_type"),
    "tee_type": (FormatError, "quote.tee_type"),
    "qe_vendor_id": (FormatError, "quote.qe_vendor_id"),
}

QUOTE_ROWS = [
    *(
        Row(
            f"sgx header.{name}",
            flip(offset),
            *_HEADER_CODES.get(name, (SignatureError, "quote.signature")),
        )
        for name, (offset, _) in _HEADER.items()
    ),
    *(
        Row(f"sgx body.{name}", flip_field(_SGX_BODY, name), SignatureError, "quote.signature")
        for name in _SGX_BODY
    ),
    # TDX header: version 4 -> 5 reads the body start as a v5 body descriptor.
    *(
        Row(
            f"tdx header.{name}",
            flip(offset),
            *(
                (FormatError, "quote.format")
                if name == "version"
                else _HEADER_CODES.get(name, (SignatureError, "quote.signature"))
            ),
            base=TDX,
        )
        for name, (offset, _) in _HEADER.items()
    ),
    *(
        Row(
            f"tdx body.{name}",
            flip_field(_TD_BODY, name),
            SignatureError,
            "quote.signature",
            base=TDX,
        )
        for name in _TD_BODY
    ),
    Row("quote signature", flip_quote_signature, SignatureError, "quote.signature"),
    Row("tdx quote signature", flip_quote_signature, SignatureError, "quote.signature", base=TDX),
    # The QE report binds SHA-256(attestation key || auth data): a changed key breaks it.
    Row("attestation key", flip_attestation_key, SignatureError, "qe_report.binding"),
    Row("tdx attestation key", flip_attestation_key, SignatureError, "qe_report.binding", TDX),
    *(
        Row(f"qe_report.{name}", flip_qe_report_field(name), SignatureError, "qe_report.signature")
        for name, _ in SGX_REPORT_FIELDS
    ),
    Row(
        "tdx qe_report.report_data",
        flip_qe_report_field("report_data"),
        SignatureError,
        "qe_report.signature",
        base=TDX,
    ),
    Row("qe report signature", flip_qe_report_signature, SignatureError, "qe_report.signature"),
    Row(
        "tdx qe report signature",
        flip_qe_report_signature,
        SignatureError,
        "qe_report.signature",
        base=TDX,
    ),
    Row("qe auth data", flip_qe_auth_data, SignatureError, "qe_report.binding"),
    Row("tdx qe auth data", flip_qe_auth_data, SignatureError, "qe_report.binding", base=TDX),
    # Zero padding is accepted (fixed-size buffers); a non-zero byte in it is not.
    Row("tdx padding non-zero", flip(-1), FormatError, "quote.trailing", base=TDX),
    Row(
        "trailing byte",
        lambda i: dataclasses.replace(i, quote=i.quote + b"\x01"),
        FormatError,
        "quote.trailing",
    ),
]

PCK_CHAIN_ROWS = [
    # The serial number sits in the TBS a few bytes in: parses, but the CA's signature fails.
    Row(
        "pck leaf serial",
        with_pck_chain(lambda c: [_flip_der(c[0], 16), *c[1:]]),
        CertificateError,
        "pck.signature",
    ),
    Row(
        "pck leaf signature",
        with_pck_chain(lambda c: [_flip_der(c[0], len(c[0]) - 3), *c[1:]]),
        CertificateError,
        "pck.signature",
    ),
    Row(
        "pck leaf outer tag",
        with_pck_chain(lambda c: [_flip_der(c[0], 0), *c[1:]]),
        FormatError,
        "pck.format",
    ),
    Row(
        "pck ca serial",
        with_pck_chain(lambda c: [c[0], _flip_der(c[1], 16), c[2]]),
        CertificateError,
        "pck_ca.signature",
    ),
    Row("pck leaf missing", with_pck_chain(lambda c: c[1:]), CertificateError, "pck.length"),
    Row(
        "pck leaf of another platform (issued by the Platform CA, not this Processor CA)",
        lambda i: with_pck_chain(
            lambda c: [_pem_blocks(_chain_of(i.vectors(AUTOMATA).quote))[0], *c[1:]]
        )(i),
        CertificateError,
        "pck.signature",
    ),
    Row(
        "tdx pck leaf serial",
        with_pck_chain(lambda c: [_flip_der(c[0], 16), *c[1:]]),
        CertificateError,
        "pck.signature",
        base=TDX,
    ),
]

COLLATERAL_ROWS = [
    Row(
        "tcb_info one character",
        edit_collateral("tcb_info", replace_text("INTEL-SA-00289", "INTEL-SA-00288")),
        CollateralError,
        "tcb_info.signature",
    ),
    Row(
        "tcb_info whitespace added",
        edit_collateral("tcb_info", lambda t: t + " "),
        CollateralError,
        "tcb_info.signature",
    ),
    Row(
        "tcb_info_signature flipped",
        edit_collateral("tcb_info_signature", flip_hex(5)),
        CollateralError,
        "tcb_info.signature",
    ),
    Row(
        "tcb_info_signature of the QE identity",
        copy_item("qe_identity_signature", "tcb_info_signature"),
        CollateralError,
        "tcb_info.signature",
    ),
    Row(
        "tcb_info_signature short",
        edit_collateral("tcb_info_signature", truncate_hex(63)),
        FormatError,
        "collateral.format",
    ),
    Row(
        "qe_identity one character",
        edit_collateral(
            "qe_identity",
            replace_text('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18'),
        ),
        CollateralError,
        "qe_identity.signature",
    ),
    Row(
        "qe_identity_signature flipped",
        edit_collateral("qe_identity_signature", flip_hex(-1)),
        CollateralError,
        "qe_identity.signature",
    ),
    Row(
        "tdx tcb_info one character",
        edit_collateral(
            "tcb_info", replace_text('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":16')
        ),
        CollateralError,
        "tcb_info.signature",
        base=TDX,
    ),
    Row(
        "tdx qe_identity_signature flipped",
        edit_collateral("qe_identity_signature", flip_hex(0)),
        CollateralError,
        "qe_identity.signature",
        base=TDX,
    ),
    Row(
        "root_ca_crl thisUpdate digit",
        edit_collateral("root_ca_crl", crl_time_digit("this")),
        CollateralError,
        "root_ca_crl.signature",
    ),
    Row(
        "root_ca_crl signature byte",
        edit_collateral("root_ca_crl", flip_hex(-2)),
        CollateralError,
        "root_ca_crl.signature",
    ),
    Row(
        "root_ca_crl truncated",
        edit_collateral("root_ca_crl", truncate_hex(200)),
        FormatError,
        "collateral.format",
    ),
    Row(
        "pck_crl nextUpdate digit",
        edit_collateral("pck_crl", crl_time_digit("next")),
        CollateralError,
        "pck_crl.signature",
    ),
    Row(
        "pck_crl signature byte",
        edit_collateral("pck_crl", flip_hex(-2)),
        CollateralError,
        "pck_crl.signature",
    ),
    Row(
        "pck_crl outer tag",
        edit_collateral("pck_crl", flip_hex(0)),
        FormatError,
        "collateral.format",
    ),
    Row(
        "pck_crl is the root CA CRL",
        copy_item("root_ca_crl", "pck_crl"),
        CollateralError,
        "pck_crl.signature",
    ),
    Row(
        "root_ca_crl is the PCK CRL",
        copy_item("pck_crl", "root_ca_crl"),
        CollateralError,
        "root_ca_crl.signature",
    ),
    # Issuer chains: the Automata set's PCK CRL chain is the Platform CA (ours: Processor CA).
    Row(
        "pck_crl_issuer_chain of the automata set",
        take_from(AUTOMATA, "pck_crl_issuer_chain"),
        CollateralError,
        "pck_crl.signature",
    ),
    Row(
        "pck_crl of the Platform CA (the tdx set's, with its issuer chain)",
        take_from(TDX, "pck_crl", "pck_crl_issuer_chain"),
        CollateralError,
        "pck_crl.issuer",
    ),
    # The 2023 epoch's TCB signing certificate has the same key but expired in 2025-05.
    Row(
        "tcb_info_issuer_chain of the 2023 epoch",
        take_from(NEGATIVE, "tcb_info_issuer_chain"),
        CertificateError,
        "tcb_signing_cert.expired",
    ),
    Row(
        "qe_identity_issuer_chain of the 2023 epoch",
        take_from(SGX, "qe_identity_issuer_chain", file="collateral_2023-11.json"),
        CertificateError,
        "qe_identity_signing_cert.expired",
    ),
    Row(
        "tcb_info_issuer_chain is the PCK CRL issuer chain",
        copy_item("pck_crl_issuer_chain", "tcb_info_issuer_chain"),
        CollateralError,
        "tcb_info.signature",
    ),
    Row(
        "qe_identity_issuer_chain is the PCK CRL issuer chain",
        copy_item("pck_crl_issuer_chain", "qe_identity_issuer_chain"),
        CollateralError,
        "qe_identity.signature",
    ),
    Row(
        "pck_crl_issuer_chain is the TCB signing chain",
        copy_item("tcb_info_issuer_chain", "pck_crl_issuer_chain"),
        CertificateError,
        "pck_crl_issuer.not_ca",
    ),
    Row(
        "tcb_info_issuer_chain without its root",
        first_cert_only("tcb_info_issuer_chain"),
        CertificateError,
        "tcb_signing_cert.length",
    ),
    Row(
        "qe_identity_issuer_chain reversed",
        reversed_chain("qe_identity_issuer_chain"),
        CertificateError,
        "qe_identity_signing_cert.root",
    ),
    Row(
        "pck_crl_issuer_chain reversed",
        reversed_chain("pck_crl_issuer_chain"),
        CertificateError,
        "pck_crl_issuer.root",
    ),
    Row(
        "tcb_info_issuer_chain ends at another root",
        edit_chain("tcb_info_issuer_chain", lambda c: [c[0], _another_root_der()]),
        CertificateError,
        "tcb_signing_cert.root",
    ),
    Row(
        "pck_crl_issuer_chain without its root",
        first_cert_only("pck_crl_issuer_chain"),
        CertificateError,
        "pck_crl_issuer.length",
    ),
    Row(
        "qe_identity_issuer_chain without its root",
        first_cert_only("qe_identity_issuer_chain"),
        CertificateError,
        "qe_identity_signing_cert.length",
    ),
    # A serial number byte of the signer changed: it parses, the root's signature fails.
    *(
        Row(
            f"{key} signer serial",
            edit_chain(key, lambda c: [_flip_der(c[0], 16), *c[1:]]),
            CertificateError,
            f"{item}.signature",
        )
        for key, item in (
            ("pck_crl_issuer_chain", "pck_crl_issuer"),
            ("tcb_info_issuer_chain", "tcb_signing_cert"),
            ("qe_identity_issuer_chain", "qe_identity_signing_cert"),
        )
    ),
]

ANCHOR_AND_PLATFORM_ROWS = [
    Row("another self-signed P-256 root", anchor(), CertificateError, "pck_crl_issuer.root"),
    Row("tdx: another self-signed root", anchor(), CertificateError, "pck_crl_issuer.root", TDX),
    Row(
        "a trust anchor that is not a CA",
        anchor(ca=False),
        CertificateError,
        "root_ca.issuer_not_ca",
    ),
    Row(
        "a trust anchor that is not self-signed (the PCK CA)",
        pck_ca_as_anchor,
        CertificateError,
        "root_ca.signature",
    ),
    Row(
        "pck chain ends at another root",
        with_pck_chain(lambda c: [c[0], c[1], _another_root_der()]),
        CertificateError,
        "pck_chain.root",
    ),
    # Collateral of another platform: the Automata set (Platform CA, FMSPC 00606A000000).
    Row(
        "collateral of another platform",
        then(take_from(AUTOMATA, *COLLATERAL_KEYS), at_time("2025-08-30T05:00:00Z")),
        CollateralError,
        "pck_crl.issuer",
    ),
    # The Automata quote (Platform CA leaf) with our collateral, but a Platform CA CRL
    # valid at our time (the TDX set's): everything holds except the FMSPC.
    Row(
        "quote of another platform, TCB info for ours",
        then(quote_of(AUTOMATA), take_from(TDX, "pck_crl", "pck_crl_issuer_chain")),
        CollateralError,
        "tcb_info.fmspc",
    ),
    Row(
        "sgx quote, tdx collateral",
        take_from(TDX, *COLLATERAL_KEYS),
        CollateralError,
        "collateral.tee_type",
    ),
    Row(
        "tdx quote, sgx collateral",
        take_from(SGX, *COLLATERAL_KEYS),
        CollateralError,
        "collateral.tee_type",
        base=TDX,
    ),
    Row(
        "sgx collateral with the tdx TCB info (validly signed)",
        take_from(TDX, "tcb_info", "tcb_info_signature", "tcb_info_issuer_chain"),
        CollateralError,
        "collateral.tee_type",
    ),
]

#: Each item's window, reached one second outside it at a time when it is the first
#: item (in the verifier's order) to fail. Issue dates and thisUpdate are inclusive.
TIME_ROWS = [
    Row(
        "tcb_info 1 s before issueDate (window start)",
        at_time("2025-06-19T10:56:11Z", -ONE_SECOND),
        CollateralError,
        "tcb_info.not_yet_valid",
    ),
    Row(
        "qe_identity 1 s after nextUpdate (window end)",
        at_time("2025-07-19T10:01:18Z", ONE_SECOND),
        CollateralError,
        "qe_identity.expired",
    ),
    Row(
        "pck_crl 1 s before thisUpdate",
        at_time("2025-06-19T10:23:18Z", -ONE_SECOND),
        CollateralError,
        "pck_crl.not_yet_valid",
    ),
    Row(
        "pck_crl 1 s after nextUpdate",
        at_time("2025-07-19T10:23:18Z", ONE_SECOND),
        CollateralError,
        "pck_crl.expired",
    ),
    Row(
        "root_ca_crl 1 s before thisUpdate",
        at_time("2025-03-20T11:21:57Z", -ONE_SECOND),
        CollateralError,
        "root_ca_crl.not_yet_valid",
    ),
    Row(
        "root_ca_crl 1 s after nextUpdate",
        at_time("2026-04-03T11:21:57Z", ONE_SECOND),
        CollateralError,
        "root_ca_crl.expired",
    ),
    Row(
        "tcb signing cert 1 s before notBefore",
        at_time("2025-05-06T09:25:00Z", -ONE_SECOND),
        CertificateError,
        "tcb_signing_cert.not_yet_valid",
    ),
    Row(
        "root CA 1 s before notBefore",
        at_time("2018-05-21T10:45:10Z", -ONE_SECOND),
        CertificateError,
        "root_ca.not_yet_valid",
    ),
    Row(
        "root CA 1 s after notAfter",
        at_time("2049-12-31T23:59:59Z", ONE_SECOND),
        CertificateError,
        "root_ca.expired",
    ),
    Row(
        "tdx qe_identity 1 s before issueDate (window start)",
        at_time("2025-06-19T10:32:27Z", -ONE_SECOND),
        CollateralError,
        "qe_identity.not_yet_valid",
        base=TDX,
    ),
    Row(
        "tdx tcb_info 1 s after nextUpdate",
        at_time("2025-07-19T10:16:03Z", ONE_SECOND),
        CollateralError,
        "pck_crl.expired",
        base=TDX,
    ),
]

ROWS = QUOTE_ROWS + PCK_CHAIN_ROWS + COLLATERAL_ROWS + ANCHOR_AND_PLATFORM_ROWS + TIME_ROWS


def test_row_names_are_unique() -> None:
    names = [row.name for row in ROWS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("base", [SGX, TDX])
def test_untampered_inputs_verify(load_vector: Callable[[str], VectorSet], base: str) -> None:
    """The matrix is meaningful only if the untouched inputs pass."""
    _verify(_inputs(load_vector, base))


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_tamper(load_vector: Callable[[str], VectorSet], row: Row) -> None:
    base = _inputs(load_vector, row.base)
    tampered = row.tamper(base)
    assert tampered != base, "the tamper changed nothing"
    with pytest.raises(AttestationError) as caught:
        _verify(tampered)
    err = caught.value
    assert (type(err), err.code) == (row.error, row.code), str(err)
    assert "\n" not in str(err)


def test_matrix_codes_are_specific() -> None:
    """No row settles for a catch-all: each code names the item and the check that failed."""
    for row in ROWS:
        item, _, check = row.code.partition(".")
        assert item and check, row
        assert row.error is not AttestationError, row
    # Every signed region of the quote is covered by a row that expects the signature check.
    signed = {row.name for row in QUOTE_ROWS if row.code == "quote.signature"}
    for name, _ in SGX_REPORT_FIELDS:
        assert f"sgx body.{name}" in signed
    for name, _ in TD_REPORT_FIELDS:
        assert f"tdx body.{name}" in signed
    for name in ("qe_svn", "pce_svn", "user_data"):
        assert {f"sgx header.{name}", f"tdx header.{name}"} <= signed


@contextmanager
def cryptography_parse_warnings_ignored() -> Iterator[None]:
    """Random bytes in a certificate can make ``cryptography`` warn while parsing it (a
    negative serial number, a country name of three letters). Those are warnings, not
    errors, outside the test suite; the properties here are about exceptions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CryptographyDeprecationWarning too
        yield


# -- random tampering ------------------------------------------------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _certs(chain: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(chain.rstrip(b"\x00"))


@FUZZ
@given(st.sampled_from([SGX, TDX]), st.data())
def test_any_byte_of_the_quote(
    load_vector: Callable[[str], VectorSet], base: str, data: st.DataObject
) -> None:
    """A changed byte fails with one of our errors, or changes nothing that is verified."""
    i = _inputs(load_vector, base)
    index = data.draw(st.integers(0, len(i.quote) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != i.quote[index]))
    mutated = bytearray(i.quote)
    mutated[index] = value
    try:
        with cryptography_parse_warnings_ignored():
            _verify(dataclasses.replace(i, quote=bytes(mutated)))
    except AttestationError:
        return
    # It verified: only the PEM text of the chain may differ, not the certificates in it.
    before, after = Quote.from_bytes(i.quote), Quote.from_bytes(bytes(mutated))
    assert dataclasses.replace(after, certification=before.certification) == before
    assert _certs(after.certification.pck_cert_chain) == _certs(before.certification.pck_cert_chain)


@FUZZ
@given(st.sampled_from([SGX, TDX]), st.sampled_from(COLLATERAL_KEYS), st.data())
def test_any_character_of_the_collateral(
    load_vector: Callable[[str], VectorSet], base: str, key: str, data: st.DataObject
) -> None:
    """A changed character fails with one of our errors, or leaves the same parsed collateral."""
    i = _inputs(load_vector, base)
    text = i.collateral[key]
    index = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(
        st.sampled_from('0123456789abcdefABCDEF{}[]",: \n-=+/xyzQ').filter(
            lambda c: c != text[index]
        )
    )
    tampered = dataclasses.replace(
        i, collateral={**i.collateral, key: text[:index] + char + text[index + 1 :]}
    )
    try:
        with cryptography_parse_warnings_ignored():
            _verify(tampered)
    except AttestationError:
        return
    original = Collateral.from_json(json.dumps(i.collateral))
    assert Collateral.from_json(json.dumps(tampered.collateral)) == original
    assert key not in ("tcb_info", "qe_identity")
