"""Fetching DCAP collateral from a PCCS or Intel's PCS (API v4), with an on-disk cache.

This is the I/O edge of the attestation package; the verification core never
calls it. The transport is :mod:`._fetcher`'s, the response parsers
:mod:`._pcs`'s, the cache :mod:`._cache`'s. Times are passed in, never read
from the clock.

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

from collections.abc import Callable
from datetime import datetime
from typing import Final, Protocol, TypeVar
from urllib.parse import urlsplit

from confide.errors import FetchError, UsageError

from ._cache import CollateralCache
from ._collateral import Collateral
from ._fetcher import DEFAULT_TIMEOUT, Fetcher, FetchResponse, aware
from ._pcs import (
    QE_IDENTITY_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER,
    TCB_INFO_CHAIN_HEADER_V3,
    check_qe_identity,
    check_tcb_info,
    parse_pck_crl,
    parse_root_crl,
    parse_signed,
    pck_ca,
)
from ._quote import Quote

INTEL_PCS_URL: Final = "https://api.trustedservices.intel.com"
#: The CRL distribution point of Intel's SGX Root CA (what Intel's PCS users fetch).
INTEL_ROOT_CA_CRL_URL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_INTEL_PCS_HOSTS: Final = frozenset({"api.trustedservices.intel.com"})


class _Expiring(Protocol):
    @property
    def expires(self) -> datetime | None: ...


_T = TypeVar("_T", bound=_Expiring)


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
        now = aware(now)
        if not isinstance(quote, Quote):
            quote = Quote.from_bytes(quote)
        tee = "tdx" if quote.is_tdx else "sgx"
        ca, fmspc = pck_ca(quote)
        base = self.base_url
        pck_crl = self._item(
            f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der",
            parse_pck_crl(ca),
            now,
        )
        tcb = self._item(
            f"{base}/{tee}/certification/v4/tcb?fmspc={fmspc.hex().upper()}",
            parse_signed(
                "tcbInfo",
                (TCB_INFO_CHAIN_HEADER, TCB_INFO_CHAIN_HEADER_V3),
                check_tcb_info(tee, fmspc),
            ),
            now,
        )
        qe = self._item(
            f"{base}/{tee}/certification/v4/qe/identity",
            parse_signed("enclaveIdentity", (QE_IDENTITY_CHAIN_HEADER,), check_qe_identity(tee)),
            now,
        )
        root_crl = self._item(self.root_ca_crl_url, parse_root_crl, now)
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
