"""Protocol: the owner's configuration request, parsed into a frozen model (no I/O).

The body's format and fields are :mod:`confide.wire`'s (:func:`confide.wire.configuration_body`
builds it).

:meth:`ConfigurationRequest.parse` checks the app id before it looks at any
other field; every failure raises :class:`ConfigurationRejected` with the
HTTP status and a message naming the field. Secret values never appear in a
message or a ``repr``.

Example::

    >>> import json, uuid
    >>> from confide.crypto import X25519KeyPair
    >>> app_id = uuid.UUID(int=7)
    >>> body = json.dumps({"uuid": str(app_id), "code_secret_key": "00" * 32}).encode()
    >>> request = ConfigurationRequest.parse(
    ...     body, app_id=app_id, enclave_key=X25519KeyPair.generate(), plaintext_code=False
    ... )
    >>> request.code_key is not None
    True
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from confide.crypto import PackageKey, X25519KeyPair, private_key_pem, unseal
from confide.errors import CryptoError, Error, JsonError, UsageError
from confide.strictjson import loads_object
from confide.wire import CONFIGURATION_FIELDS, MAX_CONFIGURATION_SIZE, SEALED_CODE_KEY

_BASE64URL: Final = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
_HEX_KEY: Final = re.compile(r"^[0-9a-fA-F]{64}$")


class ConfigurationRejected(Error):
    """A configuration request was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _bad(code: str, message: str) -> ConfigurationRejected:
    return ConfigurationRejected(400, f"configuration.{code}", message)


def _json_object(data: bytes, what: str, code: str) -> dict[str, Any]:
    """Strict JSON (:mod:`confide.strictjson`): UTF-8, no duplicate keys, no NaN/Infinity,
    bounded depth, an object at the top."""
    try:
        return loads_object(data, what=what, max_bytes=MAX_CONFIGURATION_SIZE)
    except JsonError as exc:
        raise _bad(code, exc.message) from None


def _code_key(value: object, where: str) -> PackageKey:
    if not isinstance(value, str) or not _HEX_KEY.match(value):
        raise _bad(
            "code_secret_key",
            f"{where} must be the 32-byte package key in hex (64 hex digits)",
        )
    return PackageKey(bytes.fromhex(value))


def _base64url(value: str, name: str = "app_sealed_secrets") -> bytes:
    """Base64url, with or without its ``=`` padding."""
    if not _BASE64URL.match(value):
        raise _bad(name, f"{name} is not base64url")
    bare = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        raise _bad(name, f"{name} is not base64url") from None


def _open_box(value: object, name: str, enclave_key: X25519KeyPair) -> bytes:
    """The plaintext of a base64url sealed box to the enclave's X25519 key."""
    if not isinstance(value, str):
        raise _bad(name, f"{name} must be a base64url string")
    try:
        return unseal(_base64url(value, name), enclave_key)
    except CryptoError as exc:
        raise _bad(name, f"{name} does not open with this enclave's key: {exc.message}") from None
    except UsageError:
        raise _bad(name, f"{name} does not open") from None


def _one_key(found: list[tuple[str, PackageKey]]) -> PackageKey | None:
    """The package key given (in one or more places), or ``None``; places that differ: 400."""
    if not found:
        return None
    first_where, first = found[0]
    for where, key in found[1:]:
        if key != first:
            raise _bad("code_secret_key", f"{first_where} and {where} differ")
    return first


def _private_key(value: object) -> PrivateKeyTypes:
    if not isinstance(value, str):
        raise _bad("ssl_private_key", "ssl_private_key must be a PEM string")
    try:
        return serialization.load_pem_private_key(value.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise _bad(
            "ssl_private_key", "ssl_private_key is not an unencrypted PEM private key"
        ) from None


@dataclass(frozen=True, slots=True)
class ConfigurationRequest:
    """A parsed configuration request: only checked values, no secret in its ``repr``."""

    #: The package key (``code_secret_key``, ``sealed_code_secret_key``, or the one
    #: inside the sealed secrets).
    code_key: PackageKey | None = field(repr=False)
    #: The owner's TLS private key (certificate mode only), re-encoded as PKCS#8 PEM.
    ssl_private_key_pem: bytes | None = field(repr=False)
    #: ``app_secrets`` as given.
    app_secrets: dict[str, Any] | None = field(repr=False)
    #: The opened ``app_sealed_secrets``, without the package key: what the app reads.
    sealed_secrets: dict[str, Any] | None = field(repr=False)

    @classmethod
    def parse(
        cls,
        body: bytes,
        *,
        app_id: uuid.UUID,
        enclave_key: X25519KeyPair,
        plaintext_code: bool,
        certificate_mode: bool = False,
    ) -> ConfigurationRequest:
        """Parse and check a request body; raise :class:`ConfigurationRejected`.

        401 for a missing or wrong ``uuid`` (checked before any other field),
        400 for everything else; the message names the field at fault.
        """
        if len(body) > MAX_CONFIGURATION_SIZE:
            raise ConfigurationRejected(
                413,
                "configuration.too_large",
                f"the request body is over {MAX_CONFIGURATION_SIZE} bytes",
            )
        obj = _json_object(body, "the request body", "json")
        claimed = obj.get("uuid")
        try:
            matches = isinstance(claimed, str) and uuid.UUID(claimed) == app_id
        except ValueError:
            matches = False
        if not matches:
            raise ConfigurationRejected(
                401, "configuration.uuid", "missing or wrong uuid: this is not the app's id"
            )
        # Authenticated: only now is anything else looked at.
        unknown = sorted(set(obj) - CONFIGURATION_FIELDS)
        if unknown:
            raise _bad(
                "unknown_field",
                f"unknown field(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(CONFIGURATION_FIELDS))}",
            )
        keys: list[tuple[str, PackageKey]] = []
        if obj.get("code_secret_key") is not None:
            keys.append(("code_secret_key", _code_key(obj["code_secret_key"], "code_secret_key")))
        if obj.get("sealed_code_secret_key") is not None:
            opened_key = _open_box(
                obj["sealed_code_secret_key"], "sealed_code_secret_key", enclave_key
            )
            try:
                text = opened_key.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            keys.append(
                (
                    "sealed_code_secret_key",
                    _code_key(text, "the plaintext of sealed_code_secret_key"),
                )
            )

        app_secrets = obj.get("app_secrets")
        if app_secrets is not None and not isinstance(app_secrets, dict):
            raise _bad(
                "app_secrets",
                f"app_secrets must be a JSON object, got {type(app_secrets).__name__}",
            )

        sealed_secrets = None
        if obj.get("app_sealed_secrets") is not None:
            opened = _open_box(obj["app_sealed_secrets"], "app_sealed_secrets", enclave_key)
            sealed_secrets = _json_object(
                opened, "the plaintext of app_sealed_secrets", "app_sealed_secrets"
            )
            # The package key is the runtime's, never the app's: take it out (ADR 0011).
            inner = sealed_secrets.pop(SEALED_CODE_KEY, None)
            if inner is not None:
                keys.append(
                    (
                        "code_secret_key in app_sealed_secrets",
                        _code_key(inner, "code_secret_key in app_sealed_secrets"),
                    )
                )
        code_key = _one_key(keys)

        if code_key is None and not plaintext_code:
            raise _bad(
                "code_secret_key",
                "code_secret_key is missing (in the request, in sealed_code_secret_key "
                "or in app_sealed_secrets)",
            )

        ssl_private_key_pem = None
        raw_key = obj.get("ssl_private_key")
        if certificate_mode:
            if raw_key is None:
                raise _bad("ssl_private_key", "ssl_private_key is required with --certificate")
            key = _private_key(raw_key)
            ssl_private_key_pem = private_key_pem(key)
        elif raw_key is not None:
            raise _bad(
                "ssl_private_key",
                "ssl_private_key is only accepted by a runtime launched with --certificate",
            )
        return cls(
            code_key=code_key,
            ssl_private_key_pem=ssl_private_key_pem,
            app_secrets=app_secrets,
            sealed_secrets=sealed_secrets,
        )
