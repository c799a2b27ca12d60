"""Options and helpers shared by the commands that verify attestation evidence.

Each command turns its options into the one verifier
(:class:`~confide.client.EnclaveVerifier`: :func:`evidence_source` and an
:class:`~confide.client.EnclavePolicy`) and renders a rejection with :func:`rejections`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, overload

import typer
from cryptography import x509

from confide.attestation import (
    Collateral,
    Policy,
    Quote,
    TcbStatus,
    quote_from_certificate,
)
from confide.client import (
    DEFAULT_TIMEOUT,
    CheckpointStore,
    CollateralEvidence,
    EvidenceSource,
    OperatorClient,
    OperatorReleaseLog,
    ReleaseSource,
    SimulationEvidence,
    SimulationInfo,
    state_dir,
)
from confide.errors import AttestationError, Error, FormatError, UsageError
from confide.release import LogVerifier, OwnerPublicKey

from ._app import EXIT_REJECTED
from ._output import Output

CollateralOpt = Annotated[
    Path | None,
    typer.Option(
        "--collateral",
        help="Collateral JSON (dcap-qvl QuoteCollateralV3 layout).",
        envvar="CONFIDE_COLLATERAL",
    ),
]
PccsOpt = Annotated[
    str | None,
    typer.Option(
        "--pccs-url",
        help="Fetch collateral from this PCCS or Intel PCS (v4 API), cached on disk.",
        envvar="CONFIDE_PCCS_URL",
    ),
]
AtOpt = Annotated[
    int | None,
    typer.Option("--at", help="Verification time in UNIX seconds (default: now).", min=0),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root-ca",
        help="Trust anchor certificate, PEM or DER (default: Intel's SGX Root CA).",
        envvar="CONFIDE_ROOT_CA",
    ),
]
SimOpt = Annotated[
    bool,
    typer.Option(
        "--allow-simulation",
        help="Accept a quote from a simulated TEE whose root is given with --root-ca (tests only).",
    ),
]
MrenclaveOpt = Annotated[str | None, typer.Option("--mrenclave", help="Expected MRENCLAVE (hex).")]
MrsignerOpt = Annotated[str | None, typer.Option("--mrsigner", help="Expected MRSIGNER (hex).")]
MrtdOpt = Annotated[str | None, typer.Option("--mr-td", help="Expected MRTD (hex, TDX).")]
ReportDataOpt = Annotated[
    str | None, typer.Option("--report-data", help="Expected report data (64 bytes, hex).")
]
AcceptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-tcb",
        help="Also accept this TCB status besides UpToDate (repeatable), e.g. SWHardeningNeeded.",
    ),
]
DebugEnclaveOpt = Annotated[
    bool, typer.Option("--allow-debug", help="Accept a debug enclave (its memory is not private).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
OwnerOpt = Annotated[
    str | None,
    typer.Option(
        "--owner",
        help="The app owner's public key (ed25519:...): accept only code the owner released, "
        "logged by the operator (--operator URL), valid and not revoked.",
        envvar="CONFIDE_OWNER",
    ),
]
LogKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--log-key",
        help="Pin the operator's log key (NAME+HASH+KEY) instead of trusting the first seen.",
    ),
]


def release_source(
    owner: str | None, operator: str | None, log_key: str | None, *, timeout: float
) -> tuple[OwnerPublicKey | None, ReleaseSource | None]:
    """The owner key ``--owner`` names and the operator's release log to check it in (the
    user's state folder keeps the last checkpoint seen of each operator)."""
    if owner is None:
        if log_key is not None:
            raise UsageError("--log-key is used only with --owner")
        return None, None
    if operator is None:
        raise UsageError(
            "--owner needs --operator URL: the owner's releases are checked in its log"
        )
    pinned = LogVerifier.from_text(log_key) if log_key is not None else None
    store = CheckpointStore(state_dir(os.environ))
    return OwnerPublicKey.from_text(owner), OperatorReleaseLog(operator, store, timeout, pinned)


def verification_time(at: int | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    try:
        return datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise UsageError(f"--at {at} is not a usable UNIX time: {exc}") from None


@overload
def parse_hex(value: str, name: str, size: int) -> bytes: ...
@overload
def parse_hex(value: str | None, name: str, size: int) -> bytes | None: ...
def parse_hex(value: str | None, name: str, size: int) -> bytes | None:
    """``value`` (``0x`` allowed) as exactly ``size`` bytes; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise UsageError(f"{name} is not hex: {value!r}") from None
    if len(raw) != size:
        raise UsageError(f"{name} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def build_policy(
    mrenclave: str | None,
    mrsigner: str | None,
    mr_td: str | None,
    report_data: str | None,
    accept: list[str] | None,
    allow_debug: bool,
    allow_simulation: bool,
) -> Policy:
    known = {s.value: s for s in TcbStatus}
    for status in accept or []:
        if status not in known or status == TcbStatus.REVOKED.value:
            choices = ", ".join(s for s in known if s != TcbStatus.REVOKED.value)
            raise UsageError(
                f"--accept-tcb {status!r} is not an acceptable status; one of {choices}"
            )
    return Policy(
        mr_enclave=parse_hex(mrenclave, "--mrenclave", 32),
        mr_signer=parse_hex(mrsigner, "--mrsigner", 32),
        mr_td=parse_hex(mr_td, "--mr-td", 48),
        report_data=parse_hex(report_data, "--report-data", 64),
        accepted_tcb_statuses=frozenset({TcbStatus.UP_TO_DATE.value, *(accept or [])}),
        allow_debug=allow_debug,
        allow_simulation=allow_simulation,
    )


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_certificate(raw: bytes, where: str) -> x509.Certificate:
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise FormatError(
            "certificate.format", f"{where} is not a PEM or DER certificate", detail=str(exc)
        ) from None


def load_anchor(path: Path | None) -> x509.Certificate | None:
    if path is None:
        return None
    raw = read_file(path, "root CA")
    try:
        return load_certificate(raw, str(path))
    except FormatError as exc:
        raise UsageError(str(exc)) from None


def evidence_source(
    collateral: Path | None,
    pccs_url: str | None,
    root_ca: Path | None,
    *,
    operator: str | None = None,
    default_pccs: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EvidenceSource:
    """The evidence source the options name: ``--collateral FILE`` (read when needed),
    ``--pccs-url URL`` (cached on disk), else ``default_pccs``; with ``--operator URL``, its
    simulation endpoint first (those, if any, for a real TEE or instead of its collateral)."""
    if collateral is not None and pccs_url is not None:
        raise UsageError("give exactly one of --collateral FILE or --pccs-url URL")
    anchor = load_anchor(root_ca)
    cache = cache_dir() / "collateral"
    explicit: CollateralEvidence | None = None
    if collateral is not None:
        path = collateral
        explicit = CollateralEvidence(
            lambda quote, now: Collateral.from_json(read_file(path, "collateral")), anchor
        )
    elif pccs_url is not None:
        explicit = CollateralEvidence.service(pccs_url, cache, anchor)
    real = explicit
    if real is None and default_pccs is not None:
        real = CollateralEvidence.service(default_pccs, cache, anchor)
    if operator is not None:
        url = operator

        def simulation() -> SimulationInfo | None:
            with OperatorClient(url, None, timeout=timeout) as client:
                return client.simulation()

        fetch = explicit.fetch if explicit is not None else None
        return SimulationEvidence(simulation, real, fetch, anchor)
    if real is None:
        raise UsageError("give exactly one of --collateral FILE or --pccs-url URL")
    return real


@contextmanager
def rejections(out: Output, evidence: x509.Certificate | bytes) -> Iterator[None]:
    """The one rendering of rejected evidence (a certificate, or a raw quote): the verdict and
    the checks that ran (or one JSON object) on stdout, the error line on stderr, exit 1."""
    try:
        yield
    except AttestationError as err:
        out.rejection(err, _quote_of(evidence))
        if not out.json_mode:
            out.error(err)
        raise typer.Exit(EXIT_REJECTED) from None


def _quote_of(evidence: x509.Certificate | bytes) -> Quote | None:
    """The quote of the evidence, if it has one that parses (only to be shown)."""
    try:
        raw = evidence if isinstance(evidence, bytes) else quote_from_certificate(evidence)
        return Quote.from_bytes(raw)
    except Error:
        return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "confide"
