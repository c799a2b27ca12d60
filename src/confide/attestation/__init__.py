"""Remote attestation for Intel SGX and TDX: parse, verify and apply policy to DCAP quotes.

The verification core has no I/O and no clock: it takes the quote, collateral
already fetched and the verification time. See :func:`verify_quote`.

Example::

    >>> from datetime import datetime, timezone
    >>> from confide.attestation import Collateral, Policy, verify_quote
    >>> v = "../shared/vectors/sgx-dcapqvl-00A067110000/"
    >>> result = verify_quote(  # doctest: +SKIP
    ...     open(v + "quote.bin", "rb").read(),
    ...     Collateral.from_json(open(v + "collateral.json").read()),
    ...     now=datetime.fromtimestamp(1751623200, timezone.utc),
    ...     policy=Policy.accepting(["ConfigurationAndSWHardeningNeeded"]),
    ... )
"""

from ._collateral import (
    Collateral,
    QeIdentity,
    QeTcbLevel,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    TdxModuleIdentity,
)
from ._pck import PckExtensions
from ._policy import Check, Policy, VerifiedQuote
from ._quote import CertificationData, Quote, QuoteHeader, SgxReportBody, TdReportBody
from ._verify import SIMULATION_ROOT_OID, intel_root_ca, is_simulation_root, verify_quote

__all__ = [
    "SIMULATION_ROOT_OID",
    "CertificationData",
    "Check",
    "Collateral",
    "PckExtensions",
    "Policy",
    "QeIdentity",
    "QeTcbLevel",
    "Quote",
    "QuoteHeader",
    "SgxReportBody",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "TdReportBody",
    "TdxModuleIdentity",
    "VerifiedQuote",
    "intel_root_ca",
    "is_simulation_root",
    "verify_quote",
]
