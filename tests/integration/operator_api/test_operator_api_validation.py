"""Invalid input gets 422 naming the field, and nothing is stored; any JSON gets 201 or 422."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.wire import LockedRequirement, RequirementsLock
from support.operator_api import (
    START,
    Operator,
    OperatorFactory,
    certificate,
    manifest,
    upload,
)

OWNER = manifest(tls="owner", domain="shop.example.com")


def _cert(**kwargs: Any) -> str:
    return certificate(["shop.example.com"], **kwargs)


# Each bad manifest, and the loc its 422 must name.
BAD: list[tuple[str, dict[str, Any] | str, list[str]]] = [
    ("bad name", manifest(name="Hello World"), ["body", "manifest", "name"]),
    ("long name", manifest(name="x" * 64), ["body", "manifest", "name"]),
    ("no name", manifest(name=None), ["body", "manifest", "name"]),
    ("bad application", manifest(application="app"), ["body", "manifest", "application"]),
    ("bad healthcheck", manifest(healthcheck="up"), ["body", "manifest", "healthcheck"]),
    ("unknown plan", manifest(plan="huge"), ["body", "manifest", "plan"]),
    (
        "past expiry",
        manifest(expires_at="2029-01-01T00:00:00Z"),
        ["body", "manifest", "expires_at"],
    ),
    (
        "naive expiry",
        manifest(expires_at="2031-01-01T00:00:00"),
        ["body", "manifest", "expires_at"],
    ),
    ("unknown tls", manifest(tls="sgx"), ["body", "manifest", "tls"]),
    (
        "owner without domain",
        OWNER | {"domain": None, "certificate": _cert()},
        ["body", "manifest", "domain"],
    ),
    ("owner without certificate", OWNER, ["body", "manifest", "certificate"]),
    ("certificate not PEM", OWNER | {"certificate": "nope"}, ["body", "manifest", "certificate"]),
    (
        "certificate for another domain",
        OWNER | {"certificate": certificate(["other.example.com"])},
        ["body", "manifest", "certificate"],
    ),
    (
        "certificate expiring before the app",
        OWNER | {"certificate": _cert(not_after=START + timedelta(days=3))},
        ["body", "manifest", "certificate"],
    ),
    (
        "private key sent",
        OWNER | {"certificate": _cert(with_key=True)},
        ["body", "manifest", "certificate"],
    ),
    ("domain with ratls", manifest(domain="shop.example.com"), ["body", "manifest", "domain"]),
    ("unknown field", manifest(size=3), ["body", "manifest", "size"]),
    ("not JSON", "{name: hello", ["body", "manifest"]),
    ("JSON array", "[]", ["body", "manifest"]),
    (
        "duplicate key",
        json.dumps(manifest(plan="huge"))[:-1] + ', "plan": "small"}',
        ["body", "manifest"],
    ),
    ("NaN", json.dumps(manifest())[:-1] + ', "x": NaN}', ["body", "manifest"]),
    (
        "expiry in year 9999",
        manifest(expires_at="9999-12-31T23:59:59Z"),
        ["body", "manifest", "expires_at"],
    ),
]


def _altered(package: bytes) -> dict[str, bytes]:
    """Uploads that are no package of this format, each refused without its key."""
    return {
        "empty": b"",
        "no magic": b"PK\x03\x04" + package[4:],
        "another version": package[:8] + b"\x02" + package[9:],
        "another algorithm": package[:9] + b"\x07" + package[10:],
        "header only": package[:66],
        "truncated": package[:-1],
        "padded": package + b"\x00",
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "no magic",
        "another version",
        "another algorithm",
        "header only",
        "truncated",
        "padded",
    ],
)
def test_an_upload_that_is_no_package_is_422_and_not_stored(
    operator: Operator, package: bytes, case: str
) -> None:
    bad = _altered(package)[case]
    assert bad != package
    with operator.client(operator.token("alice")) as c:
        r = upload(c, bad)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "package"] and error["type"].startswith("package."), error
        assert upload(c, package).status_code == 201  # guard: the manifest was good
    assert len(operator.blob_files()) == 1
    assert operator.dump().count("apps:") == 1


@pytest.mark.parametrize(
    ("doc", "loc"), [(d, where) for _, d, where in BAD], ids=[b[0] for b in BAD]
)
def test_bad_manifests_are_422_naming_the_field(
    operator: Operator, package: bytes, doc: dict[str, Any] | str, loc: list[str]
) -> None:
    with operator.client(operator.token("alice")) as c:
        r = upload(c, package, doc)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
    assert operator.blob_files() == []
    assert "apps:" not in operator.dump()


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``(name, filename or None, content)`` parts."""
    boundary = "confide-test-boundary"
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


GOOD = json.dumps(manifest()).encode()


@pytest.mark.parametrize(
    ("parts", "loc"),
    [
        ([("package", "p", b"x")], ["body", "manifest"]),
        ([("manifest", None, GOOD)], ["body", "package"]),
        ([], ["body", "manifest"]),
        # The package as a text field: the fields are the manifest and, optionally, the
        # requirements lock (ADR 0024); the package must be a file.
        ([("package", None, b"x"), ("manifest", None, GOOD)], ["body", "package"]),
        (
            [("package", None, b"x"), ("manifest", None, GOOD), ("requirements", None, b"x")],
            ["body"],
        ),  # three fields
        ([("package", "p", b"x"), ("manifest", "m.json", GOOD)], ["body"]),  # two files
        ([("manifest", None, b" " * (129 * 1024))], ["body"]),  # manifest too large
    ],
    ids=[
        "no manifest",
        "no package",
        "empty",
        "package not a file",
        "three fields",
        "manifest a file",
        "big",
    ],
)
def test_missing_or_extra_parts(
    operator: Operator, parts: list[tuple[str, str | None, bytes]], loc: list[str]
) -> None:
    body, content_type = _multipart(parts)
    with operator.client(operator.token("alice")) as c:
        r = c.post("/api/v1/apps", content=body, headers={"content-type": content_type})
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]], r.json()
    assert operator.blob_files() == []


def test_not_multipart_is_415(operator: Operator) -> None:
    with operator.client(operator.token("alice")) as c:
        r = c.post("/api/v1/apps", json=manifest())
    assert r.status_code == 415


def test_bad_app_ids_are_422(operator: Operator) -> None:
    with operator.client(operator.token("alice")) as c:
        r = c.get("/api/v1/apps/not-a-uuid")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "app_id"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        k: json_values | st.sampled_from(values)
        for k, values in {
            "name": ["hello", "Hello"],
            "project": ["demo"],
            "application": ["app:app", "app"],
            "healthcheck": ["/", "x"],
            "plan": ["small", "huge"],
            "expires_at": ["2030-06-01T00:00:00Z", "2020-01-01T00:00:00Z"],
            "tls": ["ratls", "owner", "operator"],
            "domain": ["shop.example.com"],
        }.items()
    },
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=st.one_of(json_values, fields, fields.map(lambda d: manifest() | d)))
def test_any_json_manifest_is_201_or_422(
    operators: OperatorFactory, package: bytes, doc: object
) -> None:
    operator, token = operators.shared(max_apps_per_account=10_000)
    with operator.client(token) as c:
        r = upload(c, package, json.dumps(doc))
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        assert all(e["loc"][:2] == ["body", "manifest"] for e in r.json()["detail"])


def test_http_client_sees_json_errors(operator: Operator) -> None:
    with httpx.Client(base_url=operator.url, timeout=10) as c:
        r = c.get("/api/v1/apps")
    assert r.status_code == 401 and r.json()["detail"]


def test_an_owner_domain_under_the_operators_domain_is_422(
    operator: Operator, package: bytes
) -> None:
    """It would shadow another app's ``<id>.<base-domain>`` name at the router."""
    name = "shop.confide.test"
    doc = manifest(tls="owner", domain=name, certificate=certificate([name]))
    with operator.client(operator.token("alice")) as c:
        r = upload(c, package, doc)
    assert r.status_code == 422, r.text
    assert ["body", "manifest", "domain"] in [e["loc"] for e in r.json()["detail"]]
    assert operator.blob_files() == []


def test_an_owner_domain_is_served_by_one_app_only(operator: Operator, package: bytes) -> None:
    doc = OWNER | {"certificate": _cert()}
    with operator.client(operator.token("alice")) as alice:
        assert upload(alice, package, doc).status_code == 201
    with operator.client(operator.token("bob")) as bob:
        r = upload(bob, package, doc)
    assert r.status_code == 409, r.text
    assert "already served" in r.json()["detail"]


def test_a_requirements_lock_is_measured_and_a_malformed_one_is_422_and_not_stored(
    operator: Operator, package: bytes
) -> None:
    """``POST /apps`` with a ``requirements`` field (ADR 0024): the lock's SHA-256 is in the
    launch manifest; a lock that is not in canonical form is refused, nothing stored."""
    lock = RequirementsLock(
        python="3.11",
        platform="manylinux_2_28_x86_64",
        source="tests",
        requirements=(LockedRequirement("tinydep", "1.0", bytes(range(32))),),
    )
    doc = json.dumps(manifest())
    files = {"package": ("app.pkg", package, "application/octet-stream")}
    with operator.client(operator.token("alice")) as c:
        bad = c.post(
            "/api/v1/apps",
            files=files,
            data={"manifest": doc, "requirements": lock.to_text().replace("==", ">=")},
        )
        assert bad.status_code == 422, bad.text
        (error,) = bad.json()["detail"]
        assert error["loc"] == ["body", "requirements"], error
        assert operator.dump().count("apps:") == 0
        good = c.post(
            "/api/v1/apps", files=files, data={"manifest": doc, "requirements": lock.to_text()}
        )
        assert good.status_code == 201, good.text
        assert good.json()["launch"]["requirements_sha256"] == lock.digest().hex()
