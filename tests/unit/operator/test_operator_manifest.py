"""The manifest of a new app: field checks, operator-dependent checks, the launch manifest."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.operator import parse_manifest
from confide.operator._schemas import build_launch_manifest
from confide.wire import LaunchManifest, TlsMode
from confide.wire.api import Plan
from support.certs import self_signed_pem

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PLANS = {p.name: p for p in (Plan("small", 512, 1, max_lifetime_days=90), Plan("large", 8192, 4))}
EXPIRES = "2030-02-01T00:00:00Z"


def certificate(
    names: list[str], *, not_after: datetime = NOW + timedelta(days=90), with_key: bool = False
) -> str:
    """A self-signed certificate for ``names``, PEM (optionally followed by its key)."""
    return self_signed_pem(
        names, not_before=NOW - timedelta(days=1), not_after=not_after, with_key=with_key
    )


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "hello",
        "project": "demo",
        "application": "app:app",
        "healthcheck": "/health",
        "plan": "small",
        "expires_at": EXPIRES,
        "tls": "ratls",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def owner(**changes: Any) -> dict[str, Any]:
    return (
        manifest(
            tls="owner", domain="app.example.com", certificate=certificate(["app.example.com"])
        )
        | changes
    )


def _errors(raw: str | bytes) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(RequestValidationError) as info:
        parse_manifest(raw, plans=PLANS, now=NOW)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_a_good_manifest() -> None:
    parsed, chain = parse_manifest(json.dumps(manifest()), plans=PLANS, now=NOW)
    assert (parsed.name, parsed.project, parsed.tls) == ("hello", "demo", TlsMode.RATLS)
    assert parsed.expires_at == datetime(2030, 2, 1, tzinfo=UTC) and chain is None
    parsed, chain = parse_manifest(json.dumps(owner()), plans=PLANS, now=NOW)
    assert chain is not None and len(chain) == 1 and parsed.domain == "app.example.com"
    defaults, _ = parse_manifest(
        json.dumps(manifest(project=None, healthcheck=None)), plans=PLANS, now=NOW
    )
    assert (defaults.project, defaults.healthcheck) == ("default", "/")
    # Cosmian's names: an underscore inside (an app name is not a domain name).
    cosmian, _ = parse_manifest(json.dumps(manifest(name="merge_join")), plans=PLANS, now=NOW)
    assert cosmian.name == "merge_join"


# Each bad manifest, and the field its 422 must name.
BAD = [
    ("name with capitals", manifest(name="Hello"), "name"),
    ("name starting with an underscore", manifest(name="_hello"), "name"),
    ("name with a dot", manifest(name="hello.example"), "name"),
    ("name too long", manifest(name="a" * 64), "name"),
    ("empty name", manifest(name=""), "name"),
    ("name missing", manifest() | {"name": None}, "name"),
    ("name not a string", manifest(name=3), "name"),
    ("project with a slash", manifest(project="a/b"), "project"),
    ("application without colon", manifest(application="app"), "application"),
    ("application with a call", manifest(application="app:create()"), "application"),
    ("application path traversal", manifest(application="../x:app"), "application"),
    ("healthcheck not a path", manifest(healthcheck="health"), "healthcheck"),
    ("healthcheck with space", manifest(healthcheck="/a b"), "healthcheck"),
    ("unknown plan", manifest(plan="huge"), "plan"),
    ("expired", manifest(expires_at="2029-12-31T23:59:59Z"), "expires_at"),
    ("expires now", manifest(expires_at="2030-01-01T00:00:00Z"), "expires_at"),
    ("naive expiry", manifest(expires_at="2030-02-01T00:00:00"), "expires_at"),
    ("expiry not a date", manifest(expires_at="soon"), "expires_at"),
    ("unknown tls", manifest(tls="certificate"), "tls"),
    ("domain without owner tls", manifest(domain="app.example.com"), "domain"),
    ("certificate without owner tls", manifest(certificate="x"), "certificate"),
    ("owner without domain", owner(domain=None), "domain"),
    ("owner without certificate", owner(certificate=None), "certificate"),
    ("bad domain", owner(domain="App.Example.com"), "domain"),
    ("certificate not PEM", owner(certificate="hello"), "certificate"),
    ("certificate for another domain", owner(certificate=certificate(["x.com"])), "certificate"),
    ("certificate without SAN", owner(certificate=certificate([])), "certificate"),
    (
        "certificate expires before the app",
        owner(certificate=certificate(["app.example.com"], not_after=NOW + timedelta(days=2))),
        "certificate",
    ),
    (
        "certificate with its private key",
        owner(certificate=certificate(["app.example.com"], with_key=True)),
        "certificate",
    ),
    ("unknown field", manifest(color="blue"), "color"),
    ("expiry past the plan's lifetime", manifest(expires_at="2030-04-02T00:00:00Z"), "expires_at"),
    (
        "expiry in year 9999",
        manifest(plan="large", expires_at="9999-12-31T00:00:00Z"),
        "expires_at",
    ),
]


@pytest.mark.parametrize(("doc", "field"), [(d, f) for _, d, f in BAD], ids=[b[0] for b in BAD])
def test_bad_manifests_name_the_field(doc: dict[str, Any], field: str) -> None:
    errors = _errors(json.dumps(doc))
    assert ("body", "manifest", field) in [loc for loc, _ in errors], errors


@pytest.mark.parametrize("raw", ["", "{", "[]", "null", "3", '"x"', b"\xff"])
def test_not_an_object(raw: str | bytes) -> None:
    for loc, _ in _errors(raw):
        assert loc[:2] == ("body", "manifest")


# Documents two JSON readers may read differently, or that are not JSON at all: each must
# be refused as a whole (a 422 on the manifest), never read one way by the operator.
NOT_STRICT = {
    "duplicate plan": (
        '{"name": "hello", "application": "app:app", "plan": "large", "plan": "small",'
        ' "expires_at": "2030-02-01T00:00:00Z", "tls": "ratls"}',
        "duplicate key 'plan'",
    ),
    "duplicate nested key": (json.dumps(manifest())[:-1] + ', "x": {"a": 1, "a": 2}}', "'a'"),
    "NaN": (json.dumps(manifest())[:-1] + ', "x": NaN}', "NaN is not JSON"),
    "Infinity": (json.dumps(manifest())[:-1] + ', "x": -Infinity}', "-Infinity is not JSON"),
    "too deep": (json.dumps(manifest())[:-1] + ', "x": ' + "[" * 65 + "]" * 65 + "}", "deep"),
}


@pytest.mark.parametrize("raw", NOT_STRICT.values(), ids=NOT_STRICT.keys())
def test_only_strict_json_is_read(raw: tuple[str, str]) -> None:
    text, why = raw
    json.loads(text)  # guard: Python's own reader takes it, so the refusal is strictness
    errors = _errors(text)
    assert [loc for loc, _ in errors] == [("body", "manifest")], errors
    assert why in errors[0][1]


def test_the_expiry_bound_is_the_plans() -> None:
    # 90 days for small (the test's plan), the default year for large.
    assert parse_manifest(
        json.dumps(manifest(expires_at="2030-03-31T00:00:00Z")), plans=PLANS, now=NOW
    )
    assert parse_manifest(
        json.dumps(manifest(plan="large", expires_at="2030-12-31T00:00:00Z")), plans=PLANS, now=NOW
    )
    (error,) = _errors(json.dumps(manifest(expires_at="2030-04-01T00:00:01Z")))
    assert error == (
        ("body", "manifest", "expires_at"),
        "expires_at 2030-04-01T00:00:01+00:00 is more than 90 days away, "
        "the longest plan small allows",
    )


def test_wildcard_certificates_cover_one_label() -> None:
    wildcard = certificate(["*.example.com"])
    parse_manifest(json.dumps(owner(certificate=wildcard)), plans=PLANS, now=NOW)
    for domain in ("a.b.example.com", "example.com"):
        doc = owner(certificate=wildcard, domain=domain)
        assert ("body", "manifest", "certificate") in [loc for loc, _ in _errors(json.dumps(doc))]


def test_launch_manifests_per_tls_mode() -> None:
    app_id = uuid.UUID(int=7)
    package, runtime = bytes([1]) * 32, bytes([2]) * 32
    domain = f"{app_id}.confide.test"

    def build(doc: dict[str, Any]) -> LaunchManifest:
        parsed, chain = parse_manifest(json.dumps(doc), plans=PLANS, now=NOW)
        return build_launch_manifest(
            app_id=app_id,
            manifest=parsed,
            chain=chain,
            package_sha256=package,
            runtime_sha256=runtime,
            base_domain="confide.test",
        )

    ratls = build(manifest())
    assert (ratls.tls, ratls.ratls_expiry, ratls.subject) == (
        TlsMode.RATLS,
        int(datetime(2030, 2, 1, tzinfo=UTC).timestamp()),
        domain,
    )
    assert ratls.san == (domain,) and ratls.package_sha256 == package
    assert ratls.runtime_sha256 == runtime and ratls.app_id == app_id

    doc = owner()
    leaf = x509.load_pem_x509_certificate(doc["certificate"].encode())
    own = build(doc)
    assert own.tls == TlsMode.OWNER and own.ratls_expiry is None
    assert (
        own.certificate_sha256
        == hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()
    )
    # Owner mode measures only the owner's domain: its certificate must cover every SAN.
    assert own.san == ("app.example.com",)

    plain = build(manifest(tls="operator"))
    assert (plain.tls, plain.certificate_sha256, plain.ratls_expiry) == (
        TlsMode.OPERATOR,
        None,
        None,
    )
    # Every input changes the fingerprint.
    assert len({m.measurement() for m in (ratls, own, plain)}) == 3
    assert LaunchManifest.from_json(ratls.to_json()) == ratls


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(
        ["hello", "app:app", "/", "small", EXPIRES, "ratls", "owner", "operator", "a.b.com"]
    ),
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        k: field_values
        for k in (
            "name",
            "project",
            "application",
            "healthcheck",
            "plan",
            "expires_at",
            "tls",
            "domain",
            "certificate",
        )
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, manifests, manifests.map(lambda d: manifest() | d)))
def test_any_json_parses_or_names_fields(doc: object) -> None:
    raw = json.dumps(doc)
    try:
        parsed, _ = parse_manifest(raw, plans=PLANS, now=NOW)
    except RequestValidationError as exc:
        errors = exc.errors()
        assert errors
        for error in errors:
            assert tuple(error["loc"][:2]) == ("body", "manifest")
            assert isinstance(error["msg"], str) and error["msg"]
            json.dumps(error)  # the 422 body can be sent
    else:
        assert parsed.plan in PLANS and parsed.expires_at > NOW


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_with_422(raw: bytes) -> None:
    try:
        parse_manifest(raw, plans=PLANS, now=NOW)
    except RequestValidationError:
        pass
