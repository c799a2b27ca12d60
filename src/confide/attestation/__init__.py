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
    >>> result.tcb_status  # doctest: +SKIP
    <TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: 'ConfigurationAndSWHardeningNeeded'>
"""

from ._cache import CollateralCache
from ._collateral import (
    Collateral,
    QeIdentity,
    QeTcbLevel,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    TdxModuleIdentity,
)
from ._fetch import INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, CollateralClient
from ._fetcher import Fetcher, FetchResponse, HttpxFetcher
from ._fresh import (
    CHALLENGE_PATH,
    MAX_ANSWER_SIZE,
    MAX_CHALLENGES_PER_CONNECTION,
    NONCE_SIZE,
    FreshAnswer,
    FreshVerified,
    fresh_report_data,
    verify_fresh_answer,
)
from ._pck import SGX_EXTENSION_OID, PckExtensions
from ._policy import Check, Policy, VerifiedQuote
from ._quote import (
    INTEL_QE_VENDOR_ID,
    CertificationData,
    Quote,
    QuoteHeader,
    SgxReportBody,
    TdReportBody,
)
from ._ratls import (
    RATLS_QUOTE_OID,
    RatlsVerified,
    create_ratls_certificate,
    fetch_peer_certificate,
    quote_from_certificate,
    ratls_report_data,
    verify_ratls_certificate,
)
from ._rtmr import (
    LAUNCH_EVENT_TYPE,
    MAX_TD_REFERENCE_SIZE,
    RTMR_SIZE,
    TdReference,
    TdxEvent,
    TdxEventLog,
    extend_rtmr,
    launch_rtmr3,
)
from ._verify import SIMULATION_ORGANIZATION, intel_root_ca, is_simulation_root, verify_quote

__all__ = [
    "CHALLENGE_PATH",
    "MAX_ANSWER_SIZE",
    "MAX_CHALLENGES_PER_CONNECTION",
    "NONCE_SIZE",
    "FreshAnswer",
    "FreshVerified",
    "fresh_report_data",
    "verify_fresh_answer",
    "INTEL_PCS_URL",
    "INTEL_QE_VENDOR_ID",
    "INTEL_ROOT_CA_CRL_URL",
    "LAUNCH_EVENT_TYPE",
    "RATLS_QUOTE_OID",
    "RTMR_SIZE",
    "SGX_EXTENSION_OID",
    "SIMULATION_ORGANIZATION",
    "CertificationData",
    "Check",
    "Collateral",
    "CollateralCache",
    "CollateralClient",
    "FetchResponse",
    "Fetcher",
    "HttpxFetcher",
    "PckExtensions",
    "Policy",
    "QeIdentity",
    "QeTcbLevel",
    "Quote",
    "QuoteHeader",
    "RatlsVerified",
    "SgxReportBody",
    "TcbInfo",
    "TcbLevel",
    "TcbStatus",
    "MAX_TD_REFERENCE_SIZE",
    "TdReference",
    "TdReportBody",
    "TdxEvent",
    "TdxEventLog",
    "TdxModuleIdentity",
    "VerifiedQuote",
    "create_ratls_certificate",
    "extend_rtmr",
    "fetch_peer_certificate",
    "intel_root_ca",
    "is_simulation_root",
    "launch_rtmr3",
    "quote_from_certificate",
    "ratls_report_data",
    "verify_quote",
    "verify_ratls_certificate",
]
