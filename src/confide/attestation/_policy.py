"""What the caller expects of verified evidence, and what verification proved.

:class:`Policy` is applied after the cryptographic verification and reported
separately: a quote can be genuine (verified) and still not be the enclave
you want (policy). Expectations left out are reported as "not requested" in
:attr:`VerifiedQuote.checks`, never silently passed; the platform rules
(TCB status, debug, simulation) are always applied and only loosened by
options named ``allow_``/``accept_``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from confide.errors import PolicyError

from ._collateral import TcbStatus
from ._quote import Quote, SgxReportBody, TdReportBody

#: TD_ATTRIBUTES bits (Intel TDX Module ABI; QEMU's ``tdx-guest`` object sets them).
TD_DEBUG: Final = 1 << 0
#: TUD bits 1-7: reserved.
TD_TUD_RESERVED: Final = 0xFE
#: SEC bits 8-27: reserved (as dcap-qvl reads them).
TD_SEC_RESERVED: Final = ((1 << 28) - 1) & ~0xFF
#: The TD takes no #VE on an EPT violation of a private page: the host cannot inject one.
TD_SEPT_VE_DISABLE: Final = 1 << 28
#: The TD may be live-migrated: its memory may leave this platform under a migration TD.
TD_MIGRATABLE: Final = 1 << 29
#: OTHER bits 32-62: reserved (PKS 30, KL 31 and PERFMON 63 are accepted).
TD_OTHER_RESERVED: Final = ((1 << 63) - 1) & ~((1 << 32) - 1)


def check_td_attributes(attributes: bytes, *, allow_debug: bool) -> str:
    """Raise :class:`PolicyError` unless a TD's attributes are those of a confidential TD.

    The rules are dcap-qvl's (ADR 0022): SEPT_VE_DISABLE set
    (``policy.td_attributes.sept_ve_disable``), MIGRATABLE clear
    (``policy.td_attributes.migratable``), no reserved bit set
    (``policy.td_attributes.reserved``), and DEBUG clear
    (``policy.td_attributes.debug``) unless ``allow_debug``. Returns the
    attributes in hex for the report.
    """
    if len(attributes) != 8:
        raise PolicyError(
            "policy.td_attributes.size",
            "TD_ATTRIBUTES",
            observed=f"{len(attributes)} bytes",
            expected="8 bytes",
        )
    value = int.from_bytes(attributes, "little")
    shown = f"TD_ATTRIBUTES {value:#018x}"

    def refuse(code: str, what: str, observed: str, expected: str, hint: str) -> PolicyError:
        return PolicyError(
            f"policy.td_attributes.{code}",
            what,
            observed=f"{shown} ({observed})",
            expected=expected,
            hint=hint,
        )

    if value & TD_DEBUG and not allow_debug:
        raise refuse(
            "debug",
            "the TD runs in debug mode (the host can read and write its memory and vCPUs)",
            "DEBUG, bit 0, set",
            "DEBUG (bit 0) clear",
            "launch the TD without debug (QEMU: no debug=on on tdx-guest)",
        )
    if not value & TD_SEPT_VE_DISABLE:
        raise refuse(
            "sept_ve_disable",
            "the TD takes #VE on EPT violations (the host can inject them into the guest)",
            "SEPT_VE_DISABLE, bit 28, clear",
            "SEPT_VE_DISABLE (bit 28) set",
            "launch the TD with sept-ve-disable=on on QEMU's tdx-guest object",
        )
    if value & TD_MIGRATABLE:
        raise refuse(
            "migratable",
            "the TD is migratable (its memory may be exported to another platform)",
            "MIGRATABLE, bit 29, set",
            "MIGRATABLE (bit 29) clear",
            "launch the TD without migration support",
        )
    reserved = value & (TD_TUD_RESERVED | TD_SEC_RESERVED | TD_OTHER_RESERVED)
    if reserved:
        raise refuse(
            "reserved",
            "the TD has attributes this verifier does not know",
            f"reserved bits {reserved:#x} set",
            "no reserved bit set (only DEBUG, SEPT_VE_DISABLE, PKS, KL, PERFMON are known)",
            "launch the TD with only the attributes Confide's ADR 0022 lists",
        )
    return shown


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the verification report."""

    name: str
    #: "passed", "failed" or "not requested".
    outcome: Literal["passed", "failed", "not requested"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """Everything a successful verification proved about a quote."""

    tee: Literal["sgx", "tdx"]
    quote_version: int
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    qe_tcb_status: TcbStatus
    report_data: bytes
    debug: bool
    #: The chain ends at a simulation root the caller explicitly allowed.
    simulated: bool
    #: The chain ends at Intel's production SGX Root CA.
    production_root: bool
    fmspc: bytes
    pce_id: bytes
    verified_at: datetime
    #: The end of the shortest window this verification relied on (the collateral's
    #: nextUpdate, the TCB info's, the CRLs', the PCK chain's notAfter): after it, verify again.
    valid_until: datetime
    quote: Quote
    checks: tuple[Check, ...] = ()
    # SGX
    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    # TDX
    mr_td: bytes | None = None
    mr_seam: bytes | None = None
    rtmrs: tuple[bytes, bytes, bytes, bytes] | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (hex for bytes)."""

        def hx(v: bytes | None) -> str | None:
            return None if v is None else v.hex()

        rtmrs = self.rtmrs or (None, None, None, None)
        return {
            "verified": True,
            "tee": self.tee,
            "quote_version": self.quote_version,
            "tcb_status": str(self.tcb_status),
            "platform_tcb_status": str(self.platform_tcb_status),
            "qe_tcb_status": str(self.qe_tcb_status),
            "advisory_ids": list(self.advisory_ids),
            "mrenclave": hx(self.mr_enclave),
            "mrsigner": hx(self.mr_signer),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "mr_td": hx(self.mr_td),
            "mr_seam": hx(self.mr_seam),
            **{f"rtmr{i}": hx(r) for i, r in enumerate(rtmrs)},
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "simulated": self.simulated,
            "production_root": self.production_root,
            "fmspc": self.fmspc.hex(),
            "verified_at": int(self.verified_at.timestamp()),
            "valid_until": int(self.valid_until.timestamp()),
            "checks": [
                {"name": c.name, "outcome": c.outcome, "detail": c.detail} for c in self.checks
            ],
            "error": None,
        }


@dataclass(frozen=True, slots=True)
class Policy:
    """Expectations about the enclave, applied after verification.

    Example::

        >>> policy = Policy(mr_enclave=bytes(32), accepted_tcb_statuses=frozenset({"UpToDate"}))
        >>> policy.allow_simulation
        False
    """

    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    mr_td: bytes | None = None
    #: Expected RTMR0..3; ``None`` in a position leaves that register unchecked.
    rtmrs: tuple[bytes | None, bytes | None, bytes | None, bytes | None] | None = None
    report_data: bytes | None = None
    #: TCB statuses accepted; only UpToDate unless others are opted in by name.
    accepted_tcb_statuses: frozenset[str] = field(
        default_factory=lambda: frozenset({TcbStatus.UP_TO_DATE.value})
    )
    allow_debug: bool = False
    #: Accept a quote whose chain ends at a simulation root passed as the trust anchor.
    allow_simulation: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.accepted_tcb_statuses) - {s.value for s in TcbStatus})
        if unknown or TcbStatus.REVOKED.value in self.accepted_tcb_statuses:
            raise ValueError(f"not an acceptable TCB status: {', '.join(unknown) or 'Revoked'}")
        for name, size in (
            ("mr_enclave", 32),
            ("mr_signer", 32),
            ("mr_td", 48),
            ("report_data", 64),
        ):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
        if self.rtmrs is not None:
            if len(self.rtmrs) != 4:
                raise ValueError(f"rtmrs must be 4 entries, got {len(self.rtmrs)}")
            for i, rtmr in enumerate(self.rtmrs):
                if rtmr is not None and len(rtmr) != 48:
                    raise ValueError(f"rtmrs[{i}] must be 48 bytes, got {len(rtmr)}")

    @classmethod
    def accepting(cls, statuses: Iterable[str], **kwargs: object) -> Policy:
        """A policy accepting UpToDate plus the named TCB statuses."""
        accepted = frozenset({TcbStatus.UP_TO_DATE.value, *statuses})
        return cls(accepted_tcb_statuses=accepted, **kwargs)  # type: ignore[arg-type]

    def apply(
        self,
        body: SgxReportBody | TdReportBody,
        tcb_status: TcbStatus,
        advisory_ids: tuple[str, ...],
    ) -> tuple[Check, ...]:
        """Raise :class:`PolicyError` on the first unmet expectation; return the checks run."""
        checks: list[Check] = []

        def expect(code: str, name: str, observed: object, expected: object | None) -> None:
            if expected is None:
                checks.append(Check(name, "not requested"))
                return
            if observed != expected:
                raise PolicyError(f"policy.{code}", name, observed=observed, expected=expected)
            checks.append(Check(name, "passed", _show(observed)))

        status = tcb_status.value
        if status not in self.accepted_tcb_statuses:
            raise PolicyError(
                "policy.tcb_status",
                "TCB status not accepted",
                observed=status,
                expected=" or ".join(sorted(self.accepted_tcb_statuses)),
                hint=f"accept it explicitly (--accept-tcb {status}) only if its advisories "
                f"{', '.join(advisory_ids) or '(none)'} are acceptable to you",
            )
        checks.append(Check("TCB status accepted", "passed", status))
        if isinstance(body, TdReportBody):
            # A TD's attributes are checked as a whole, DEBUG with them (ADR 0022).
            shown = check_td_attributes(body.td_attributes, allow_debug=self.allow_debug)
            checks.append(Check("TD attributes", "passed", shown))
        if body.debug and not self.allow_debug:
            raise PolicyError(
                "policy.debug",
                "the enclave runs in debug mode (its memory is readable by the host)",
                observed="debug",
                expected="production",
            )
        checks.append(
            Check("debug mode", "passed", "allowed" if body.debug else "production enclave")
        )
        if isinstance(body, SgxReportBody):
            expect("mrenclave", "MRENCLAVE", body.mr_enclave, self.mr_enclave)
            expect("mrsigner", "MRSIGNER", body.mr_signer, self.mr_signer)
            expect("isv_prod_id", "ISVPRODID", body.isv_prod_id, self.isv_prod_id)
            if self.min_isv_svn is None:
                checks.append(Check("ISVSVN minimum", "not requested"))
            elif body.isv_svn < self.min_isv_svn:
                raise PolicyError(
                    "policy.isv_svn",
                    "ISVSVN below the minimum",
                    observed=body.isv_svn,
                    expected=f">= {self.min_isv_svn}",
                )
            else:
                checks.append(Check("ISVSVN minimum", "passed", str(body.isv_svn)))
            for name, value in (("mr_td", self.mr_td), ("rtmrs", self.rtmrs)):
                if value is not None:
                    raise PolicyError(
                        f"policy.{name}",
                        f"{name} expected but the quote is SGX",
                        observed="sgx",
                        expected="tdx",
                    )
        elif isinstance(body, TdReportBody):
            expect("mr_td", "MRTD", body.mr_td, self.mr_td)
            expected_rtmrs = self.rtmrs or (None, None, None, None)
            for i, (have, want) in enumerate(zip(body.rtmrs, expected_rtmrs, strict=True)):
                expect(f"rtmr{i}", f"RTMR{i}", have, want)
            for name in ("mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn"):
                if getattr(self, name) is not None:
                    raise PolicyError(
                        f"policy.{name}",
                        f"{name} expected but the quote is TDX",
                        observed="tdx",
                        expected="sgx",
                    )
        expect("report_data", "report data", body.report_data, self.report_data)
        return tuple(checks)


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)
