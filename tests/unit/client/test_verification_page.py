"""The proxy's verification page (ADR 0026): one document from the verifier's results,
rendered with every value escaped, no script, no foreign asset, and never the app's.

The escaping test has a guard: with escaping turned off, the same inertness check
must see the payloads as markup, so it cannot pass vacuously.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import create_ratls_certificate, ratls_report_data
from confide.client import (
    CertificatePin,
    EnclavePolicy,
    PinRejected,
    ProxyApp,
    ProxySettings,
    TrustMaterial,
    VerifiedEnclave,
    release_summary,
)
from confide.client import _verifypage as page
from confide.client._verify import verify_enclave
from confide.errors import PolicyError
from confide.release import Checkpoint, OwnerKey, Release, VerifiedRelease
from confide.tee import SimulatedPlatform
from confide.wire import LAUNCH_MANIFEST_OID, LaunchManifest, TlsMode

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
KEY = ec.derive_private_key(4343, ec.SECP256R1())
APP = "app.example"
#: Markup an app, an operator or an owner could put in a value the page shows.
PAYLOADS = (
    "<script>document.title='pwned-1'</script>",
    '"><img src=x onerror="document.title=\'pwned-2\'">',
    "<style>body{display:none}</style>",
)
LAUNCH = LaunchManifest(
    runtime_sha256=bytes(32),
    package_sha256=bytes(range(32)),
    app_id=uuid.UUID(int=7),
    application="app:app",
    tls=TlsMode.RATLS,
    ratls_expiry=int((NOW + timedelta(days=1)).timestamp()),
    certificate_sha256=None,
    san=(APP, PAYLOADS[0], PAYLOADS[1]),
    subject=None,
)
FP = LAUNCH.measurement()
OWNER = OwnerKey.generate()


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> VerifiedEnclave:
    """A real verification (simulated TEE) of an enclave launched with hostile names, running
    an owner's release whose labels are hostile too."""
    platform = SimulatedPlatform.open(tmp_path_factory.mktemp("page") / "sim", now=CREATED)
    quote = platform.quote(
        ratls_report_data(KEY.public_key(), bytes(32)), mr_enclave=FP, mr_signer=bytes(32)
    )
    cert = create_ratls_certificate(
        KEY,
        quote,
        subject=APP,
        sans=(APP,),
        not_before=CREATED,
        not_after=CREATED + timedelta(days=1),
        extensions=[x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, LAUNCH.to_json())],
    )
    material = TrustMaterial(platform.collateral(NOW), platform.root_certificate, simulated=True)
    result = verify_enclave(cert, material, now=NOW, policy=policy())
    release = Release.of(
        LAUNCH,
        not_before=CREATED,
        validity=timedelta(days=30),
        version=PAYLOADS[0],
        source_ref=PAYLOADS[1],
    )
    logged = VerifiedRelease(
        OWNER.public_key, release, 3, Checkpoint("log.example/confide", 4, bytes(32)), b""
    )
    return dataclasses.replace(result, release=logged)


def policy() -> EnclavePolicy:
    return EnclavePolicy(FP, APP, owner=OWNER.public_key, allow_simulation=True)


class _Markup(HTMLParser):
    """The elements, attributes and text a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def markup(html: bytes) -> _Markup:
    parser = _Markup()
    parser.feed(html.decode())
    parser.close()
    return parser


def inert(html: bytes) -> bool:
    """No payload became markup: no script, img or style element, no event attribute; and
    each payload is shown as text."""
    found = markup(html)
    if {"script", "img", "style", "iframe", "object"} & set(found.tags):
        return False
    if any(name.startswith("on") for name, _ in found.attrs):
        return False
    text = "".join(found.text)
    return all(payload in text for payload in PAYLOADS[:2])


def test_hostile_names_and_release_labels_render_inert(verified: VerifiedEnclave) -> None:
    document = page.verification_document(policy(), verified, now=NOW)
    html = page.render_page(document)
    assert inert(html), html.decode()
    # The values are there, as text: the names, the release's labels, the owner.
    text = "".join(markup(html).text)
    assert OWNER.public_key.key_id in text and FP.hex() in text


def test_the_inertness_check_sees_unescaped_payloads(
    verified: VerifiedEnclave, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guard: with escaping removed, the same page is not inert (the check can fail)."""
    monkeypatch.setattr(page, "escape", str)
    html = page.render_page(page.verification_document(policy(), verified, now=NOW))
    assert not inert(html)


def test_a_hostile_error_message_renders_inert() -> None:
    refusal = page.Refusal("launch.name", " ".join(PAYLOADS), NOW)
    document = page.verification_document(policy(), None, now=NOW, refusal=refusal)
    html = page.render_page(document, forwarded_path="/" + PAYLOADS[0])
    assert inert(html), html.decode()
    assert "launch.name" in "".join(markup(html).text)


def test_every_value_comes_from_the_verifiers_results(verified: VerifiedEnclave) -> None:
    """The JSON form is the verifier's own summaries, as ``confide verify --json`` prints them."""
    document = page.verification_document(policy(), verified, now=NOW)
    enclave = document["enclave"]
    assert document["status"] == "verified" and document["error"] is None
    assert enclave["quote"] == verified.quote.to_dict()
    assert enclave["release"] == release_summary(verified.release)  # type: ignore[arg-type]
    assert enclave["launch"] == LAUNCH.to_dict()
    assert enclave["name"] == APP
    assert enclave["valid_until"] == verified.valid_until.isoformat()
    assert enclave["certificate"]["not_after"] == (CREATED + timedelta(days=1)).isoformat()
    assert document["expected"]["fingerprint"] == FP.hex()
    assert document["expected"]["owner_key_id"] == OWNER.public_key.key_id
    assert json.loads(json.dumps(document)) == document
    # The page shows the TEE, that it is simulated, the TCB status, the names measured.
    text = "".join(markup(page.render_page(document)).text)
    for shown in ("SIMULATED", "UpToDate", APP, FP.hex(), "launch manifest measured"):
        assert shown in text, shown


def test_the_page_uses_nothing_but_its_own_style_sheet(verified: VerifiedEnclave) -> None:
    html = page.render_page(page.verification_document(policy(), verified, now=NOW))
    found = markup(html)
    assert "script" not in found.tags
    links = [value for name, value in found.attrs if name in ("href", "src")]
    assert links and all(link is not None and link.startswith("/.well-known/") for link in links)
    assert b"http://" not in html and b"https://" not in html
    css = page.style_sheet()
    assert b"url(" not in css and b"@import" not in css


@pytest.mark.parametrize(
    ("path", "own"),
    [
        ("/.well-known/confide/", True),
        ("/.well-known/confide", True),
        ("/.well-known/confide/verification.json", True),
        ("/.well-known/confide/anything/else", True),
        ("/app/../.well-known/confide/", True),
        ("/.well-known/./confide/style.css", True),
        ("/.well-known/confidential", False),
        ("/", False),
        ("/.well-known/other", False),
    ],
)
def test_which_paths_are_the_proxys(path: str, own: bool) -> None:
    assert page.is_page_path(path) is own


# -- served by the proxy --------------------------------------------------------------------


def _request(
    app: ProxyApp, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the proxy's ASGI app; the pin holds, so nothing goes upstream
    for its own pages (an upstream attempt would fail: the upstream is a closed port)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def _proxy(verified: VerifiedEnclave, upstream_port: int, now: datetime = NOW) -> ProxyApp:
    def never(cert: x509.Certificate) -> VerifiedEnclave:
        raise PolicyError("policy.mrenclave", "MRENCLAVE", observed="aa", expected="bb")

    pin = CertificatePin(
        verified.certificate.public_bytes(Encoding.DER),
        verify=never,
        log=lambda line: None,
        valid_until=verified.valid_until,
        clock=lambda: now,
        verified=verified,
    )
    settings = ProxySettings(
        domain=APP,
        upstream=("127.0.0.1", upstream_port),
        timeout=5.0,
        allowed_hosts=frozenset({"127.0.0.1:8000"}),
    )
    return ProxyApp(settings, pin, log=lambda line: None, policy=policy())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HEADERS = {
    b"content-security-policy": page.CONTENT_SECURITY_POLICY.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/.well-known/confide/", 200, b"text/html; charset=utf-8"),
        ("/.well-known/confide/verification.json", 200, b"application/json"),
        ("/.well-known/confide/style.css", 200, b"text/css"),
        ("/.well-known/confide/challenge", 404, b"text/plain; charset=utf-8"),
    ],
)
def test_the_proxy_serves_its_pages_itself_with_strict_headers(
    verified: VerifiedEnclave, path: str, status: int, kind: bytes, tmp_path: Path
) -> None:
    app = _proxy(verified, _closed_port())
    got, headers, body = _request(app, "GET", path, [(b"accept", b"text/html")])
    assert (got, headers[b"content-type"]) == (status, kind), body
    for name, value in HEADERS.items():
        assert headers[name] == value, name
    if path.endswith(".json"):
        assert json.loads(body)["enclave"]["quote"]["mrenclave"] == FP.hex()


def test_a_refused_request_shows_the_reason_to_a_browser_only(verified: VerifiedEnclave) -> None:
    """The enclave now answers with another certificate (here: nothing listens, so the
    proxy cannot reach it): a browser gets the page with the code; a script one line."""
    app = _proxy(verified, _closed_port())
    status, headers, body = _request(app, "GET", "/", [(b"accept", b"text/html,*/*")])
    assert status == 502 and headers[b"content-type"].startswith(b"text/html")
    assert headers[b"content-security-policy"] == page.CONTENT_SECURITY_POLICY.encode()
    text = "".join(markup(body).text)
    assert "proxy.unreachable" in text and "Not verified: nothing was sent" in text
    status, headers, body = _request(app, "GET", "/", [(b"accept", b"*/*")])
    assert status == 502 and headers[b"content-type"].startswith(b"text/plain")
    assert len(body.strip().splitlines()) == 1 and b"cannot reach the enclave" in body


def test_a_verification_that_ran_out_and_fails_again_is_shown_as_not_verified(
    verified: VerifiedEnclave,
) -> None:
    app = _proxy(verified, _closed_port(), now=verified.valid_until + timedelta(seconds=1))
    status, _, body = _request(app, "GET", "/.well-known/confide/verification.json", [])
    document = json.loads(body)
    assert status == 502 and document["status"] == "not verified"
    assert document["enclave"] is None and document["error"]["code"] == "policy.mrenclave"
    status, _, html = _request(app, "GET", "/.well-known/confide/", [])
    assert status == 502 and re.search(rb"policy\.mrenclave", html)


def test_a_refused_certificate_keeps_the_verifiers_code(verified: VerifiedEnclave) -> None:
    """What the page shows of a refusal is the verifier's typed code, and the one line."""
    app = _proxy(verified, _closed_port())
    other = b"another certificate"  # not even DER: the refusal names the format
    with pytest.raises(PinRejected) as caught:
        asyncio.run(app.pin.check(other))
    assert caught.value.code == "certificate.format" and caught.value.at == NOW
    assert app.pin.last_refusal is not None and app.pin.last_refusal.code == "certificate.format"
    # The verification in force still holds: the page says verified, and names the refusal.
    status, _, body = _request(app, "GET", "/.well-known/confide/verification.json", [])
    document = json.loads(body)
    assert status == 200 and document["status"] == "verified"
    assert document["error"]["code"] == "certificate.format"
    # A certificate that parses and fails verification: the verifier's own code.
    with pytest.raises(PinRejected) as caught:
        asyncio.run(app.pin.check(_other_certificate()))
    assert caught.value.code == "policy.mrenclave"
    assert "not trusted" in str(caught.value)


def _other_certificate() -> bytes:
    key = ec.derive_private_key(99, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(CREATED)
        .not_valid_after(CREATED + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)
