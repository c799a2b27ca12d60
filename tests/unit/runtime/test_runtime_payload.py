"""The configuration request parser: authentication first, every refusal names its field."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.crypto import PackageKey, X25519KeyPair, seal
from confide.runtime import (
    ConfigurationRejected,
    ConfigurationRequest,
)
from confide.wire import MAX_CONFIGURATION_SIZE

APP_ID = uuid.UUID("6f1e0c3a-8a43-4a52-9d84-0e1f3e2b7c10")
ENCLAVE = X25519KeyPair.generate()
KEY = PackageKey.generate()


def _sealed(payload: Any, key: bytes = ENCLAVE.public_key, *, pad: bool = False) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    text = base64.urlsafe_b64encode(seal(raw, key)).decode()
    return text if pad else text.rstrip("=")


def _parse(
    body: dict[str, Any] | bytes, *, plaintext: bool = False, certificate: bool = False
) -> ConfigurationRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ConfigurationRequest.parse(
        raw,
        app_id=APP_ID,
        enclave_key=ENCLAVE,
        plaintext_code=plaintext,
        certificate_mode=certificate,
    )


def _ok(**fields: Any) -> dict[str, Any]:
    return {"uuid": str(APP_ID), "code_secret_key": KEY.hex(), **fields}


def test_code_key_in_the_request() -> None:
    request = _parse(_ok(app_secrets={"a": 1}))
    assert request.code_key == KEY
    assert request.app_secrets == {"a": 1}
    assert request.sealed_secrets is None
    assert KEY.hex() not in repr(request)


@pytest.mark.parametrize("pad", [True, False])
def test_code_key_inside_the_sealed_secrets(pad: bool) -> None:
    sealed = _sealed({"code_secret_key": KEY.hex(), "token": "t"}, pad=pad)
    request = _parse({"uuid": str(APP_ID).upper(), "app_sealed_secrets": sealed})
    assert request.code_key == KEY
    # The package key opens the code; the app never sees it (ADR 0011).
    assert request.sealed_secrets == {"token": "t"}


def test_code_key_in_its_own_sealed_field() -> None:
    request = _parse(
        {
            "uuid": str(APP_ID),
            "sealed_code_secret_key": _sealed(KEY.hex().encode()),
            "app_sealed_secrets": _sealed({"token": "t"}),
        }
    )
    assert request.code_key == KEY
    assert request.sealed_secrets == {"token": "t"}
    assert KEY.hex() not in repr(request)


def test_the_same_key_in_every_place_is_accepted() -> None:
    request = _parse(
        _ok(
            sealed_code_secret_key=_sealed(KEY.hex().encode()),
            app_sealed_secrets=_sealed({"code_secret_key": KEY.hex()}),
        )
    )
    assert request.code_key == KEY
    assert request.sealed_secrets == {}


def test_plaintext_code_needs_no_key() -> None:
    assert _parse({"uuid": str(APP_ID)}, plaintext=True).code_key is None


def test_certificate_mode_key_is_normalised_to_pkcs8() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    request = _parse(_ok(ssl_private_key=traditional), certificate=True)
    assert request.ssl_private_key_pem is not None
    assert request.ssl_private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


OTHER = X25519KeyPair.generate().public_key

#: id -> (body, status, fragment of the message)
REFUSALS: dict[str, tuple[dict[str, Any] | bytes, int, str]] = {
    "not json": (b"{", 400, "not valid JSON"),
    "not utf-8": (b'{"uuid": "\xfe"}', 400, "not UTF-8"),
    "array": (b"[]", 400, "must be a JSON object"),
    "nan": (b'{"uuid": NaN}', 400, "not valid JSON"),
    "deep": (b"[" * 100_000, 400, "nested too deeply"),
    "too large": (b" " * (MAX_CONFIGURATION_SIZE + 1), 413, "over"),
    "no uuid": ({"code_secret_key": KEY.hex()}, 401, "uuid"),
    "wrong uuid": (_ok(uuid=str(uuid.uuid4())), 401, "wrong uuid"),
    "uuid number": (_ok(uuid=1), 401, "wrong uuid"),
    "uuid garbage": (_ok(uuid="x"), 401, "wrong uuid"),
    "uuid before all": ({"uuid": "x", "extra": 1, "code_secret_key": 3}, 401, "wrong uuid"),
    "duplicate key": (
        f'{{"uuid": "{APP_ID}", "uuid": "{APP_ID}"}}'.encode(),
        400,
        "duplicate key 'uuid'",
    ),
    "unknown field": (_ok(extra=1), 400, "unknown field(s) extra"),
    "no code key": ({"uuid": str(APP_ID)}, 400, "code_secret_key is missing"),
    "code key short": (_ok(code_secret_key="ab" * 31), 400, "64 hex digits"),
    "code key type": (_ok(code_secret_key=5), 400, "64 hex digits"),
    "secrets list": (_ok(app_secrets=[]), 400, "app_secrets must be a JSON object"),
    "sealed type": (_ok(app_sealed_secrets=5), 400, "must be a base64url string"),
    "sealed alphabet": (_ok(app_sealed_secrets="ab+/"), 400, "not base64url"),
    "sealed one char": (_ok(app_sealed_secrets="A"), 400, "not base64url"),
    "sealed other key": (
        _ok(app_sealed_secrets=_sealed({"a": 1}, OTHER)),
        400,
        "does not open with this enclave's key",
    ),
    "sealed short": (_ok(app_sealed_secrets="AAAA"), 400, "does not open"),
    "sealed not json": (_ok(app_sealed_secrets=_sealed(b"\x00\x01")), 400, "app_sealed_secrets"),
    "sealed array": (_ok(app_sealed_secrets=_sealed([1])), 400, "must be a JSON object"),
    "sealed bad key": (
        _ok(app_sealed_secrets=_sealed({"code_secret_key": "00"})),
        400,
        "code_secret_key in app_sealed_secrets must be",
    ),
    "keys differ": (
        _ok(app_sealed_secrets=_sealed({"code_secret_key": PackageKey.generate().hex()})),
        400,
        "differ",
    ),
    "sealed key differs": (
        _ok(sealed_code_secret_key=_sealed(PackageKey.generate().hex().encode())),
        400,
        "code_secret_key and sealed_code_secret_key differ",
    ),
    "sealed key type": (_ok(sealed_code_secret_key=5), 400, "must be a base64url string"),
    "sealed key alphabet": (_ok(sealed_code_secret_key="ab+/"), 400, "not base64url"),
    "sealed key other enclave": (
        _ok(sealed_code_secret_key=_sealed(KEY.hex().encode(), OTHER)),
        400,
        "sealed_code_secret_key does not open with this enclave's key",
    ),
    "sealed key raw bytes": (
        _ok(sealed_code_secret_key=_sealed(KEY.secret)),
        400,
        "the plaintext of sealed_code_secret_key must be",
    ),
    "ssl key outside certificate mode": (
        _ok(ssl_private_key="x"),
        400,
        "only accepted by a runtime launched with --certificate",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals(name: str) -> None:
    body, status, fragment = REFUSALS[name]
    with pytest.raises(ConfigurationRejected) as info:
        _parse(body)
    assert info.value.status == status
    assert fragment in info.value.message
    assert info.value.code.startswith("configuration.")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_ok(), "ssl_private_key is required"),
        (_ok(ssl_private_key=7), "must be a PEM string"),
        (_ok(ssl_private_key="-----BEGIN PRIVATE KEY-----\nAA==\n"), "not an unencrypted PEM"),
    ],
)
def test_certificate_mode_refusals(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationRejected) as info:
        _parse(body, certificate=True)
    assert info.value.status == 400 and fragment in info.value.message


def test_messages_never_carry_secret_values() -> None:
    secret = "s3cr3t-value-not-to-show"
    for body in (
        _ok(app_secrets=[secret]),
        _ok(code_secret_key=secret),
        _ok(app_sealed_secrets=secret),
        _ok(sealed_code_secret_key=secret),
        _ok(ssl_private_key=secret),
    ):
        with pytest.raises(ConfigurationRejected) as info:
            _parse(body)
        assert secret not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_are_refused(body: bytes) -> None:
    try:
        _parse(body)
    except ConfigurationRejected as exc:
        assert exc.status in (400, 401)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["code_secret_key", "app_secrets", "x"]), json_values))
def test_any_authenticated_object_parses_or_is_a_400(fields: dict[str, Any]) -> None:
    try:
        request = _parse({"uuid": str(APP_ID), **fields})
    except ConfigurationRejected as exc:
        assert exc.status == 400
    else:
        assert request.code_key is not None
