"""Protocol: the owner's configuration request body, and its one builder.

The JSON body uses Cosmian Enclave's field names and encodings, so its
clients work unchanged::

    {"uuid": "<the app id>",                          required, checked first
     "code_secret_key": "<64 hex digits>",            the package key
     "sealed_code_secret_key": "<base64url>",         the package key sealed to the enclave's
                                                      X25519 key (plaintext: 64 hex digits);
                                                      what ``confide deploy`` sends
     "ssl_private_key": "<PEM>",                      only with --certificate, required there
     "app_secrets": {...},                            any JSON object
     "app_sealed_secrets": "<base64url>"}             a sealed box to the enclave's X25519
                                                      key; its plaintext is a JSON object,
                                                      which may hold "code_secret_key"

The package key may come in any of the three places (Cosmian's clients put it
in ``code_secret_key`` or inside ``app_sealed_secrets``); those given must be
equal. It is never handed to the app: a ``code_secret_key`` inside
``app_sealed_secrets`` is taken out of :attr:`ConfigurationRequest.sealed_secrets`
(what the app reads at ``$SEALED_SECRETS_PATH``), and the rest is kept as sent.

The runtime parses it (:class:`confide.runtime.ConfigurationRequest`: the app
id first, then each field, secrets never in a message); :func:`configuration_body`
builds it for the owner (``confide deploy``) and the benchmarks.

Example::

    >>> import uuid
    >>> configuration_body(uuid.UUID(int=7), code_secret_key="00" * 32)["uuid"]
    '00000000-0000-0000-0000-000000000007'
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Any, Final

#: Largest configuration request body, in bytes (secrets, not bulk data).
MAX_CONFIGURATION_SIZE: Final = 1024 * 1024
#: The fields a configuration request may carry.
CONFIGURATION_FIELDS: Final = frozenset(
    {
        "uuid",
        "code_secret_key",
        "sealed_code_secret_key",
        "ssl_private_key",
        "app_secrets",
        "app_sealed_secrets",
    }
)
#: The key of the package key inside ``app_sealed_secrets`` (Cosmian's clients put it there).
SEALED_CODE_KEY: Final = "code_secret_key"


def configuration_body(
    app_id: uuid.UUID,
    *,
    code_secret_key: str | None = None,
    sealed_code_secret_key: bytes | None = None,
    ssl_private_key: str | None = None,
    app_secrets: Mapping[str, Any] | None = None,
    app_sealed_secrets: bytes | None = None,
) -> dict[str, Any]:
    """The JSON object of a configuration request; the fields left ``None`` are left out.

    Sealed boxes are given as bytes and sent in base64url; ``code_secret_key`` is the
    package key in hex.
    """
    body: dict[str, Any] = {"uuid": str(app_id)}
    if code_secret_key is not None:
        body["code_secret_key"] = code_secret_key
    if sealed_code_secret_key is not None:
        body["sealed_code_secret_key"] = _base64url(sealed_code_secret_key)
    if app_secrets is not None:
        body["app_secrets"] = dict(app_secrets)
    if app_sealed_secrets is not None:
        body["app_sealed_secrets"] = _base64url(app_sealed_secrets)
    if ssl_private_key is not None:
        body["ssl_private_key"] = ssl_private_key
    return body


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")
