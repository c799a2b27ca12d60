"""Tests for fetching collateral from a PCS or PCCS, and the on-disk cache.

The network is an ``httpx.MockTransport`` that serves the real vector items
(``../shared/vectors/<set>/``) the way Intel's PCS (or a PCCS) does: DER or
hex CRLs, issuer chains as URL-encoded PEM headers, and JSON bodies that embed
the signed ``tcb_info.json`` / ``qe_identity.json`` bytes unchanged.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.attestation import Collateral, Policy, Quote, verify_quote
from confide.attestation._cache import CollateralCache
from confide.attestation._fetch import INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, CollateralClient
from confide.attestation._fetcher import MAX_RESPONSE_SIZE, FetchResponse, HttpxFetcher
from confide.attestation._pcs import MAX_JSON_BODY_SIZE
from confide.attestation._pcs import json_members as _json_members
from confide.errors import AttestationError, FetchError, TcbError, UsageError

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
PCCS_URL = "https://pccs.example:8081"


@dataclass(frozen=True)
class Vector:
    name: str
    tee: str
    ca: str
    fmspc: str
    statuses: tuple[str, ...]
    #: The verifier's error for the negative vector, else ``None``.
    error: type[AttestationError] | None = None

    @property
    def dir(self) -> Path:
        return VECTORS / self.name

    def read(self, item: str) -> bytes:
        return (self.dir / item).read_bytes()

    @property
    def quote(self) -> bytes:
        return self.read("quote.bin").removesuffix(NEGATIVE_TRAILER)

    @property
    def now(self) -> datetime:
        expected = json.loads(self.read("expected.json"))
        return datetime.fromtimestamp(expected["verification_time"], UTC)

    @property
    def collateral(self) -> Collateral:
        return Collateral.from_json(self.read("collateral.json"))


SGX_DCAPQVL = Vector(
    "sgx-dcapqvl-00A067110000",
    "sgx",
    "processor",
    "00A067110000",
    ("ConfigurationAndSWHardeningNeeded",),
)
SGX_AUTOMATA = Vector(
    "sgx-automata-00606A000000", "sgx", "platform", "00606A000000", ("SWHardeningNeeded",)
)
TDX_DCAPQVL = Vector("tdx-dcapqvl-B0C06F000000", "tdx", "platform", "B0C06F000000", ())
#: The negative TDX quote ends with this text (see its README), which the parser
#: rejects; without it the quote parses and fails verification on its TCB.
NEGATIVE_TRAILER = b"\nextra bytes(only for testing purpose)\n"
TDX_NEGATIVE = Vector(
    "tdx-gotdxguest-50806F000000-negative", "tdx", "platform", "50806F000000", (), TcbError
)
ALL_VECTORS = [SGX_DCAPQVL, SGX_AUTOMATA, TDX_DCAPQVL, TDX_NEGATIVE]


def _pem_header(pem: bytes) -> str:
    """URL-encode a PEM chain the way the PCS does in its issuer chain headers."""
    return quote(pem.decode(), safe="")


def _signed_body(member: str, raw: bytes, signature_hex: bytes) -> bytes:
    return b'{"' + member.encode() + b'":' + raw + b',"signature":"' + signature_hex.strip() + b'"}'


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeService:
    """A PCS (``pccs=False``) or PCCS serving one vector's collateral."""

    vector: Vector
    pccs: bool = False
    #: Replaces the handler of a route: ``pckcrl``, ``tcb``, ``qe`` or ``rootcrl``.
    overrides: dict[str, Handler] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return PCCS_URL if self.pccs else INTEL_PCS_URL

    def url(self, route: str) -> str:
        v, base = self.vector, self.base_url
        return {
            "pckcrl": f"{base}/sgx/certification/v4/pckcrl?ca={v.ca}&encoding=der",
            "tcb": f"{base}/{v.tee}/certification/v4/tcb?fmspc={v.fmspc}",
            "qe": f"{base}/{v.tee}/certification/v4/qe/identity",
            "rootcrl": (
                f"{base}/sgx/certification/v4/rootcacrl" if self.pccs else INTEL_ROOT_CA_CRL_URL
            ),
        }[route]

    def client(self, cache: CollateralCache | None = None) -> CollateralClient:
        return CollateralClient(
            self.base_url, HttpxFetcher(httpx.MockTransport(self.handle)), cache=cache
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(url)
        for route in ("pckcrl", "tcb", "qe", "rootcrl"):
            if url == self.url(route):
                serve = {
                    "pckcrl": self.serve_pckcrl,
                    "tcb": self.serve_tcb,
                    "qe": self.serve_qe,
                    "rootcrl": self.serve_rootcrl,
                }
                return self.overrides.get(route, serve[route])(request)
        return httpx.Response(404, headers={"Error-Code": "NotFound"})

    def serve_pckcrl(self, request: httpx.Request) -> httpx.Response:
        der = self.vector.read("pck_crl.der")
        chain = self.vector.read("pck_crl_issuer_chain.pem")
        return httpx.Response(
            200,
            headers={"SGX-PCK-CRL-Issuer-Chain": _pem_header(chain)},
            content=der.hex().encode() if self.pccs else der,
        )

    def serve_tcb(self, request: httpx.Request) -> httpx.Response:
        v = self.vector
        # A PCCS may still use the API v3 header name.
        header = "SGX-TCB-Info-Issuer-Chain" if self.pccs else "TCB-Info-Issuer-Chain"
        return httpx.Response(
            200,
            headers={header: _pem_header(v.read("tcb_info_issuer_chain.pem"))},
            content=_signed_body(
                "tcbInfo", v.read("tcb_info.json"), v.read("tcb_info_signature.hex")
            ),
        )

    def serve_qe(self, request: httpx.Request) -> httpx.Response:
        v = self.vector
        return httpx.Response(
            200,
            headers={
                "SGX-Enclave-Identity-Issuer-Chain": _pem_header(
                    v.read("qe_identity_issuer_chain.pem")
                )
            },
            content=_signed_body(
                "enclaveIdentity", v.read("qe_identity.json"), v.read("qe_identity_signature.hex")
            ),
        )

    def serve_rootcrl(self, request: httpx.Request) -> httpx.Response:
        der = self.vector.read("root_ca_crl.der")
        return httpx.Response(200, content=der.hex().encode() if self.pccs else der)


@pytest.fixture
def fetch_cache(tmp_path: Path) -> CollateralCache:
    return CollateralCache(tmp_path / "cache")


# --- fetching real collateral --------------------------------------------------------


@pytest.mark.parametrize("pccs", [False, True], ids=["pcs", "pccs"])
@pytest.mark.parametrize("vector", ALL_VECTORS, ids=lambda v: v.name)
def test_fetch_returns_the_vector_collateral_and_it_verifies(vector: Vector, pccs: bool) -> None:
    service = FakeService(vector, pccs=pccs)
    collateral = service.client().fetch(vector.quote, now=vector.now)

    assert collateral == vector.collateral
    assert collateral.tcb_info_raw.encode() == vector.read("tcb_info.json")
    assert collateral.qe_identity_raw.encode() == vector.read("qe_identity.json")
    assert sorted(service.requests) == sorted(
        service.url(r) for r in ("pckcrl", "tcb", "qe", "rootcrl")
    )
    policy = Policy.accepting(vector.statuses)
    if vector.error is not None:
        with pytest.raises(vector.error):
            verify_quote(vector.quote, collateral, now=vector.now, policy=policy)
        return
    result = verify_quote(vector.quote, collateral, now=vector.now, policy=policy)
    assert result.tcb_status == (vector.statuses or ("UpToDate",))[0]


def test_fetch_accepts_a_parsed_quote() -> None:
    service = FakeService(TDX_DCAPQVL)
    quote = Quote.from_bytes(TDX_DCAPQVL.quote)
    assert service.client().fetch(quote, now=TDX_DCAPQVL.now) == TDX_DCAPQVL.collateral


def _pem_crl(der: bytes) -> bytes:
    import base64
    import textwrap

    b64 = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN X509 CRL-----\n{b64}\n-----END X509 CRL-----\n".encode()


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda der: der, id="der"),
        pytest.param(lambda der: der.hex().encode(), id="hex"),
        pytest.param(lambda der: der.hex().upper().encode() + b"\n", id="hex-upper-newline"),
        pytest.param(_pem_crl, id="pem"),
    ],
)
def test_crl_encodings_are_accepted(encode: Callable[[bytes], bytes]) -> None:
    v = SGX_DCAPQVL
    service = FakeService(v)
    chain = _pem_header(v.read("pck_crl_issuer_chain.pem"))
    service.overrides["pckcrl"] = lambda r: httpx.Response(
        200,
        headers={"SGX-PCK-CRL-Issuer-Chain": chain},
        content=encode(v.read("pck_crl.der")),
    )
    service.overrides["rootcrl"] = lambda r: httpx.Response(
        200, content=encode(v.read("root_ca_crl.der"))
    )
    assert service.client().fetch(v.quote, now=v.now) == v.collateral


def test_member_order_and_whitespace_do_not_matter() -> None:
    v = SGX_AUTOMATA
    service = FakeService(v)
    body = (
        b' {\n  "signature" : "'
        + v.read("tcb_info_signature.hex").strip()
        + b'",\n  "tcbInfo" :\t'
        + v.read("tcb_info.json")
        + b"\n}\n"
    )
    chain = _pem_header(v.read("tcb_info_issuer_chain.pem"))
    service.overrides["tcb"] = lambda r: httpx.Response(
        200, headers={"tcb-info-issuer-chain": chain}, content=body
    )
    collateral = service.client().fetch(v.quote, now=v.now)
    assert collateral.tcb_info_raw.encode() == v.read("tcb_info.json")
    verify_quote(v.quote, collateral, now=v.now, policy=Policy.accepting(v.statuses))


def test_default_root_ca_crl_url_depends_on_the_service() -> None:
    fetcher = HttpxFetcher(httpx.MockTransport(lambda r: httpx.Response(404)))
    assert CollateralClient(INTEL_PCS_URL, fetcher).root_ca_crl_url == INTEL_ROOT_CA_CRL_URL
    assert CollateralClient(INTEL_PCS_URL + "/", fetcher).root_ca_crl_url == INTEL_ROOT_CA_CRL_URL
    assert (
        CollateralClient(PCCS_URL + "/", fetcher).root_ca_crl_url
        == PCCS_URL + "/sgx/certification/v4/rootcacrl"
    )
    custom = "https://crl.example/root.der"
    assert CollateralClient(PCCS_URL, fetcher, root_ca_crl_url=custom).root_ca_crl_url == custom


@dataclass
class RecordingFetcher:
    """A :class:`Fetcher` that records timeouts and delegates to a fake service."""

    service: FakeService
    timeouts: list[float] = field(default_factory=list)

    def get(self, url: str, *, timeout: float) -> FetchResponse:
        self.timeouts.append(timeout)
        r = self.service.handle(httpx.Request("GET", url))
        return FetchResponse(r.status_code, dict(r.headers), r.read())


def test_every_request_has_the_client_timeout() -> None:
    fetcher = RecordingFetcher(FakeService(SGX_DCAPQVL))
    client = CollateralClient(INTEL_PCS_URL, fetcher, timeout=2.5)
    client.fetch(SGX_DCAPQVL.quote, now=SGX_DCAPQVL.now)
    assert fetcher.timeouts == [2.5] * 4


@pytest.mark.parametrize(
    ("base_url", "timeout"),
    [
        ("pccs.example:8081", 10.0),
        ("ftp://pccs.example", 10.0),
        ("https://", 10.0),
        ("https://pccs.example/?x=1", 10.0),
        (PCCS_URL, 0),
        (PCCS_URL, -1.0),
    ],
)
def test_bad_client_arguments_raise_usage_error(base_url: str, timeout: float) -> None:
    fetcher = HttpxFetcher(httpx.MockTransport(lambda r: httpx.Response(404)))
    with pytest.raises(UsageError):
        CollateralClient(base_url, fetcher, timeout=timeout)


def test_naive_time_is_refused(fetch_cache: CollateralCache) -> None:
    client = FakeService(SGX_DCAPQVL).client(fetch_cache)
    with pytest.raises(UsageError):
        client.fetch(SGX_DCAPQVL.quote, now=datetime(2025, 7, 4))
    with pytest.raises(UsageError):
        fetch_cache.get("https://x.example", now=datetime(2025, 7, 4))


# --- failures ------------------------------------------------------------------------


def _with(
    route_response: Callable[[FakeService, httpx.Request], httpx.Response],
) -> Callable[[FakeService], Handler]:
    def make(service: FakeService) -> Handler:
        return lambda request: route_response(service, request)

    return make


def _tamper_tcb(
    body: Callable[[Vector], bytes], headers: Callable[[Vector], dict[str, str]] | None = None
) -> Callable[[FakeService], Handler]:
    def respond(service: FakeService, request: httpx.Request) -> httpx.Response:
        v = service.vector
        h = (
            headers(v)
            if headers
            else {"TCB-Info-Issuer-Chain": _pem_header(v.read("tcb_info_issuer_chain.pem"))}
        )
        return httpx.Response(200, headers=h, content=body(v))

    return _with(respond)


def _tcb_sig(v: Vector) -> bytes:
    return v.read("tcb_info_signature.hex").strip()


def _raising(exc: type[httpx.TransportError], message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(message, request=request)

    return handler


def _raise(exc: type[httpx.TransportError], message: str) -> Callable[[FakeService], Handler]:
    return lambda service: _raising(exc, message)


def _status(
    code: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> Callable[[FakeService], Handler]:
    return lambda service: lambda request: httpx.Response(code, headers=headers, content=body)


def _pck_crl(
    content: Callable[[Vector], bytes], chain_from: Vector | None = None
) -> Callable[[FakeService], Handler]:
    def respond(service: FakeService, request: httpx.Request) -> httpx.Response:
        v = service.vector
        chain = (chain_from or v).read("pck_crl_issuer_chain.pem")
        return httpx.Response(
            200, headers={"SGX-PCK-CRL-Issuer-Chain": _pem_header(chain)}, content=content(v)
        )

    return _with(respond)


def _qe_from(other: Vector) -> Callable[[FakeService], Handler]:
    return lambda service: FakeService(other).serve_qe


FAILURES: list[tuple[str, str, Callable[[FakeService], Handler], str]] = [
    # (case, route, handler, expected reason fragment)
    (
        "tcb 404",
        "tcb",
        _status(404, headers={"Error-Code": "NotFound"}),
        "HTTP 404: Error-Code: NotFound",
    ),
    ("pckcrl 500", "pckcrl", _status(500, b"internal\nerror"), "HTTP 500: internal error"),
    ("rootcrl 503", "rootcrl", _status(503), "HTTP 503"),
    (
        "redirect",
        "qe",
        _status(302, headers={"Location": "https://elsewhere.example/"}),
        "HTTP 302",
    ),
    ("qe timeout", "qe", _raise(httpx.ReadTimeout, "read timed out"), "timed out after 10 s"),
    ("refused", "tcb", _raise(httpx.ConnectError, "[Errno 111] Connection refused"), "refused"),
    ("protocol", "pckcrl", _raise(httpx.RemoteProtocolError, "bad chunk"), "RemoteProtocolError"),
    (
        "tcb no chain header",
        "tcb",
        _tamper_tcb(
            lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), _tcb_sig(v)), lambda v: {}
        ),
        "missing header TCB-Info-Issuer-Chain",
    ),
    (
        "qe no chain header",
        "qe",
        lambda service: lambda r: httpx.Response(200, content=service.serve_qe(r).read()),
        "missing header SGX-Enclave-Identity-Issuer-Chain",
    ),
    (
        "pckcrl no chain header",
        "pckcrl",
        lambda service: lambda r: httpx.Response(200, content=service.vector.read("pck_crl.der")),
        "missing header SGX-PCK-CRL-Issuer-Chain",
    ),
    (
        "chain header not PEM",
        "tcb",
        _tamper_tcb(
            lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), _tcb_sig(v)),
            lambda v: {"TCB-Info-Issuer-Chain": "not%20a%20chain"},
        ),
        "not a PEM chain",
    ),
    (
        "chain header with plus as space",
        "tcb",
        _tamper_tcb(
            lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), _tcb_sig(v)),
            lambda v: {
                "TCB-Info-Issuer-Chain": _pem_header(v.read("tcb_info_issuer_chain.pem"))[:200]
            },
        ),
        "not a PEM chain",
    ),
    ("bad JSON", "tcb", _tamper_tcb(lambda v: b'{"tcbInfo": {'), "malformed JSON body"),
    ("not an object", "tcb", _tamper_tcb(lambda v: b"[1, 2]"), "expected '{'"),
    ("not UTF-8", "tcb", _tamper_tcb(lambda v: b'{"tcbInfo": "\xff"}'), "not UTF-8"),
    (
        "trailing data",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), _tcb_sig(v)) + b"x"),
        "trailing data",
    ),
    (
        "missing tcbInfo",
        "tcb",
        _tamper_tcb(lambda v: b'{"signature": "' + _tcb_sig(v) + b'"}'),
        "missing member 'tcbInfo'",
    ),
    (
        "missing signature",
        "tcb",
        _tamper_tcb(lambda v: b'{"tcbInfo": ' + v.read("tcb_info.json") + b"}"),
        "missing member 'signature'",
    ),
    (
        "duplicate tcbInfo",
        "tcb",
        _tamper_tcb(
            lambda v: (
                b'{"tcbInfo": {}, '
                + _signed_body("tcbInfo", v.read("tcb_info.json"), _tcb_sig(v))[1:]
            )
        ),
        "duplicate key 'tcbInfo'",
    ),
    (
        "nested duplicate key",
        "tcb",
        _tamper_tcb(
            lambda v: _signed_body(
                "tcbInfo", v.read("tcb_info.json")[:-1] + b',"version":3}', _tcb_sig(v)
            )
        ),
        "duplicate key 'version'",
    ),
    (
        "tcbInfo not an object",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", b'"{}"', _tcb_sig(v))),
        "'tcbInfo' is not an object",
    ),
    (
        "signature not a string",
        "tcb",
        _tamper_tcb(lambda v: b'{"tcbInfo": ' + v.read("tcb_info.json") + b', "signature": 1}'),
        "'signature' is not a string",
    ),
    (
        "signature not hex",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), b"zz" * 64)),
        "'signature' is not hex",
    ),
    (
        "signature too short",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", v.read("tcb_info.json"), b"00" * 63)),
        "is 63 bytes, expected 64",
    ),
    (
        "NaN",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", b'{"x": NaN}', _tcb_sig(v))),
        "NaN is not JSON",
    ),
    (
        "tcbInfo malformed",
        "tcb",
        _tamper_tcb(lambda v: _signed_body("tcbInfo", b'{"version": 3}', _tcb_sig(v))),
        "malformed tcbInfo",
    ),
    (
        "tcb body over the limit",
        "tcb",
        _tamper_tcb(lambda v: b" " * (MAX_JSON_BODY_SIZE + 1)),
        f"response body over {MAX_JSON_BODY_SIZE} bytes",
    ),
    (
        "crl body over the fetcher limit",
        "pckcrl",
        _pck_crl(lambda v: b"\x30" * (MAX_RESPONSE_SIZE + 1)),
        f"response body over {MAX_RESPONSE_SIZE} bytes",
    ),
    (
        "wrong fmspc",
        "tcb",
        _tamper_tcb(
            lambda v: _signed_body(
                "tcbInfo", SGX_AUTOMATA.read("tcb_info.json"), _tcb_sig(SGX_AUTOMATA)
            )
        ),
        "wrong content: TCB info SGX for FMSPC 00606A000000, expected SGX for 00A067110000",
    ),
    ("wrong QE identity", "qe", _qe_from(TDX_DCAPQVL), "wrong content: QE identity TD_QE"),
    (
        "pckcrl not a CRL",
        "pckcrl",
        _pck_crl(lambda v: v.read("tcb_info_issuer_chain.pem")),
        "not a CRL",
    ),
    ("pckcrl bad PEM", "pckcrl", _pck_crl(lambda v: _pem_crl(b"\x30\x00")), "not a CRL"),
    (
        "pckcrl of the other CA",
        "pckcrl",
        _pck_crl(lambda v: SGX_AUTOMATA.read("pck_crl.der"), SGX_AUTOMATA),
        "wrong content: a CRL issued by 'Intel SGX PCK Platform CA'",
    ),
    (
        "pckcrl chain of another issuer",
        "pckcrl",
        _pck_crl(lambda v: v.read("pck_crl.der"), SGX_AUTOMATA),
        "wrong content",
    ),
    ("rootcrl not a CRL", "rootcrl", _status(200, b"<html>hello</html>"), "not a CRL"),
    ("rootcrl odd hex", "rootcrl", _status(200, b"abc"), "not a CRL"),
]


@pytest.mark.parametrize(
    ("route", "make_handler", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in FAILURES],
)
def test_failures_raise_fetch_error_naming_the_url(
    route: str, make_handler: Callable[[FakeService], Handler], reason: str
) -> None:
    service = FakeService(SGX_DCAPQVL)
    service.overrides[route] = make_handler(service)
    with pytest.raises(FetchError) as info:
        service.client().fetch(SGX_DCAPQVL.quote, now=SGX_DCAPQVL.now)
    err = info.value
    assert err.url == service.url(route)
    assert reason in err.reason
    assert str(err).startswith(f"fetching {service.url(route)} failed: ")
    assert "\n" not in str(err)


def test_unknown_fmspc_is_a_404_naming_the_url() -> None:
    # The TDX quote asks the SGX vector's service for a TCB info it does not have.
    service = FakeService(SGX_DCAPQVL)
    client = service.client()
    with pytest.raises(FetchError, match="HTTP 404") as info:
        client.fetch(TDX_DCAPQVL.quote, now=TDX_DCAPQVL.now)
    assert info.value.url == f"{INTEL_PCS_URL}/sgx/certification/v4/pckcrl?ca=platform&encoding=der"


# --- HttpxFetcher --------------------------------------------------------------------


def test_httpx_fetcher_returns_status_headers_and_body() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(418, headers={"X-Thing": "a"}, content=b"body")
    )
    with HttpxFetcher(transport) as fetcher:
        response = fetcher.get("https://x.example/", timeout=1)
    assert response.status == 418
    assert response.body == b"body"
    assert response.headers["x-thing"] == response.headers["X-THING"] == "a"
    assert "X-Thing" in response.headers


@pytest.mark.parametrize(
    ("url", "handler", "reason"),
    [
        (
            "https://x.example/",
            lambda r: httpx.Response(200, content=b"x" * 11),
            "response body over 10 bytes",
        ),
        ("https://x.example/", _raising(httpx.ConnectTimeout, "slow"), "timed out after 1 s"),
        ("https://x.example/", _raising(httpx.ConnectError, "refused"), "could not connect"),
        ("x.example/no-scheme", lambda r: httpx.Response(200), "not an http(s) URL"),
        ("file:///etc/passwd", lambda r: httpx.Response(200), "not an http(s) URL"),
        ("https://[bad/", lambda r: httpx.Response(200), "not an http(s) URL"),
    ],
)
def test_httpx_fetcher_maps_errors(url: str, handler: Handler, reason: str) -> None:
    fetcher = HttpxFetcher(httpx.MockTransport(handler), max_size=10)
    with pytest.raises(FetchError) as info:
        fetcher.get(url, timeout=1)
    assert info.value.url == url
    assert reason in info.value.reason


def test_fetch_response_headers_are_case_insensitive_and_immutable() -> None:
    response = FetchResponse(200, {"TCB-Info-Issuer-Chain": "x"}, b"")
    assert response.headers["tcb-info-issuer-chain"] == "x"
    assert dict(response.headers) == {"TCB-Info-Issuer-Chain": "x"}
    assert "missing" not in response.headers
    assert len(response.headers) == 1
    assert "TCB-Info-Issuer-Chain" in repr(response.headers)
    with pytest.raises(TypeError):
        response.headers["new"] = "y"  # type: ignore[index]


# --- the cache -----------------------------------------------------------------------


def _fetch_twice(
    vector: Vector, cache: CollateralCache, first: datetime, second: datetime
) -> tuple[FakeService, list[str]]:
    service = FakeService(vector)
    client = service.client(cache)
    client.fetch(vector.quote, now=first)
    service.requests.clear()
    client.fetch(vector.quote, now=second)
    return service, sorted(service.requests)


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# SGX_DCAPQVL's items expire at: QE identity 10:01:18, PCK CRL 10:23:18, TCB info
# 10:56:11 on 2025-07-19, root CA CRL 2026-04-03T11:21:57Z.
CACHE_TIMES = [
    ("same time", "2025-07-04T10:00:00Z", ()),
    ("before every nextUpdate", "2025-07-19T10:01:17Z", ()),
    ("at the QE identity's nextUpdate", "2025-07-19T10:01:18Z", ("qe",)),
    ("after the PCK CRL's", "2025-07-19T10:30:00Z", ("pckcrl", "qe")),
    ("after the TCB info's", "2025-07-19T11:00:00Z", ("pckcrl", "qe", "tcb")),
    ("after the root CA CRL's", "2026-04-03T11:21:57Z", ("pckcrl", "qe", "rootcrl", "tcb")),
]


@pytest.mark.parametrize(
    ("second", "refetched"), [pytest.param(t, r, id=c) for c, t, r in CACHE_TIMES]
)
def test_cache_is_used_until_each_items_next_update(
    fetch_cache: CollateralCache, second: str, refetched: tuple[str, ...]
) -> None:
    service, requests = _fetch_twice(SGX_DCAPQVL, fetch_cache, SGX_DCAPQVL.now, _at(second))
    assert requests == sorted(service.url(r) for r in refetched)


def test_cached_collateral_equals_fetched_and_verifies(fetch_cache: CollateralCache) -> None:
    v = TDX_DCAPQVL
    service = FakeService(v)
    client = service.client(fetch_cache)
    first = client.fetch(v.quote, now=v.now)
    second = client.fetch(v.quote, now=v.now + timedelta(days=1))
    assert len(service.requests) == 4
    assert first == second == v.collateral
    verify_quote(v.quote, second, now=v.now + timedelta(days=1))


def test_expired_items_are_not_cached(fetch_cache: CollateralCache) -> None:
    later = _at("2030-01-01T00:00:00Z")
    service, requests = _fetch_twice(SGX_DCAPQVL, fetch_cache, later, later)
    assert len(requests) == 4
    assert not fetch_cache.directory.exists() or not any(fetch_cache.directory.iterdir())


def test_cache_files_are_private_and_writes_leave_no_temporary_files(
    fetch_cache: CollateralCache,
) -> None:
    FakeService(SGX_DCAPQVL).client(fetch_cache).fetch(SGX_DCAPQVL.quote, now=SGX_DCAPQVL.now)
    directory = fetch_cache.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.iterdir())
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.suffix == ".json" and not path.name.startswith(".tmp")
    service = FakeService(SGX_DCAPQVL)
    assert {p.name for p in files} == {
        fetch_cache.path_for(service.url(r)).name for r in ("pckcrl", "tcb", "qe", "rootcrl")
    }


def _entry(path: Path) -> dict[str, object]:
    value = json.loads(path.read_text())
    assert isinstance(value, dict)
    return value


def _rewrite(change: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        entry = _entry(path)
        change(entry)
        path.write_text(json.dumps(entry))

    return apply


# (case, corruption applied to every cache file, items fetched again)
CORRUPTIONS: list[tuple[str, Callable[[Path], object], int]] = [
    ("garbage", lambda p: p.write_bytes(os.urandom(64)), 4),
    ("empty", lambda p: p.write_bytes(b""), 4),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:50]), 4),
    ("not an object", lambda p: p.write_text("[]"), 4),
    ("deeply nested", lambda p: p.write_text("[" * 100_000), 4),
    ("too large", lambda p: p.write_bytes(b" " * (2 * MAX_RESPONSE_SIZE + 1)), 4),
    ("wrong format", _rewrite(lambda e: e.update(format=2)), 4),
    ("other url", _rewrite(lambda e: e.update(url="https://other.example/")), 4),
    ("bad expiry", _rewrite(lambda e: e.update(expires="tomorrow")), 4),
    ("naive expiry", _rewrite(lambda e: e.update(expires="2099-01-01T00:00:00")), 4),
    ("headers not strings", _rewrite(lambda e: e.update(headers={"a": 1})), 4),
    ("body not base64", _rewrite(lambda e: e.update(body="!!")), 4),
    ("body replaced", _rewrite(lambda e: e.update(body="AAAA")), 4),
    ("missing body", _rewrite(lambda e: e.pop("body")), 4),
    # The root CA CRL needs no header: only the three others are refetched.
    ("headers dropped", _rewrite(lambda e: e.update(headers={})), 3),
]


@pytest.mark.parametrize(
    ("corrupt", "refetched"), [pytest.param(c, n, id=name) for name, c, n in CORRUPTIONS]
)
def test_corrupt_cache_files_are_ignored_and_replaced(
    fetch_cache: CollateralCache, corrupt: Callable[[Path], object], refetched: int
) -> None:
    v = SGX_DCAPQVL
    service = FakeService(v)
    client = service.client(fetch_cache)
    client.fetch(v.quote, now=v.now)
    for path in fetch_cache.directory.iterdir():
        corrupt(path)
    service.requests.clear()
    assert client.fetch(v.quote, now=v.now) == v.collateral
    assert len(service.requests) == refetched
    service.requests.clear()
    client.fetch(v.quote, now=v.now)
    assert service.requests == []  # the corrupt files were replaced by good entries


def test_a_cache_expiry_past_the_items_own_next_update_is_not_trusted(
    fetch_cache: CollateralCache,
) -> None:
    v = SGX_DCAPQVL
    service = FakeService(v)
    client = service.client(fetch_cache)
    client.fetch(v.quote, now=v.now)
    for path in fetch_cache.directory.iterdir():
        _rewrite(lambda e: e.update(expires="2099-01-01T00:00:00+00:00"))(path)
    service.requests.clear()
    client.fetch(v.quote, now=_at("2025-07-19T11:00:00Z"))
    # Only the root CA CRL (valid until 2026) is still taken from the cache.
    assert sorted(service.requests) == sorted(service.url(r) for r in ("pckcrl", "qe", "tcb"))


def test_cache_get_and_put(fetch_cache: CollateralCache) -> None:
    url = "https://pccs.example/sgx/certification/v4/qe/identity"
    expires = _at("2025-07-19T10:00:00Z")
    response = FetchResponse(
        200,
        {"sgx-enclave-identity-issuer-chain": "chain", "Set-Cookie": "dropped"},
        b"\x00body",
    )
    assert fetch_cache.get(url, now=expires - timedelta(days=1)) is None
    fetch_cache.put(url, response, expires=expires)
    cached = fetch_cache.get(url, now=expires - timedelta(seconds=1))
    assert cached is not None
    assert cached.body == b"\x00body"
    assert dict(cached.headers) == {"SGX-Enclave-Identity-Issuer-Chain": "chain"}
    assert fetch_cache.get(url, now=expires) is None
    assert fetch_cache.get(url + "?x", now=expires - timedelta(days=1)) is None


def test_cache_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cache = CollateralCache(shared)
    with pytest.raises(UsageError, match="only its owner can write"):
        cache.put(
            "https://x.example/", FetchResponse(200, {}, b""), expires=_at("2099-01-01T00:00:00Z")
        )


def test_cache_write_failure_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = CollateralCache(blocker / "cache")
    with pytest.raises(UsageError, match="cannot write the collateral cache"):
        cache.put(
            "https://x.example/", FetchResponse(200, {}, b""), expires=_at("2099-01-01T00:00:00Z")
        )


# --- raw member extraction -----------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])


@settings(max_examples=300)
@given(
    members=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    separators=SEPARATORS,
    ensure_ascii=st.booleans(),
    lead=st.sampled_from(["", " ", "\n\t "]),
)
def test_json_members_returns_the_exact_text_of_each_member(
    members: dict[str, object], separators: tuple[str, str], ensure_ascii: bool, lead: str
) -> None:
    text = lead + json.dumps(members, separators=separators, ensure_ascii=ensure_ascii) + lead
    raw = _json_members("https://x.example/", text.encode(), tuple(members))
    assert raw.keys() == members.keys()
    for key, value in members.items():
        assert raw[key] == json.dumps(value, separators=separators, ensure_ascii=ensure_ascii)
        assert raw[key] in text


def _outcome(text: bytes) -> None:
    try:
        raw = _json_members("https://x.example/", text, ())
    except FetchError as exc:
        assert exc.url == "https://x.example/"
        return
    decoded = text.decode()
    for value in raw.values():
        assert value in decoded
        json.loads(value)


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_json_members_on_arbitrary_input_returns_or_raises_fetch_error(text: bytes) -> None:
    _outcome(text)


@settings(max_examples=300)
@given(
    members=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4),
    data=st.data(),
)
def test_json_members_on_mutated_json_returns_or_raises_fetch_error(
    members: dict[str, object], data: st.DataObject
) -> None:
    text = json.dumps(members)
    pos = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(st.sampled_from(["", "{", "}", '"', ",", ":", "[", "]", " ", "\\", "\x00"]))
    _outcome((text[:pos] + insert + text[pos + cut :]).encode())


def test_json_members_limits_depth() -> None:
    with pytest.raises(FetchError, match="malformed JSON body"):
        _json_members("https://x.example/", b'{"a": ' + b"[" * 100_000 + b"}", ())
