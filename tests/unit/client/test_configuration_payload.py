"""``confide deploy``'s configuration body: the code key in its own sealed field only."""

from __future__ import annotations

import json
import types
import uuid
from typing import cast

from confide.client import configuration_payload
from confide.crypto import PackageKey, X25519KeyPair
from confide.runtime import ConfigurationRequest
from confide.wire.api import AppRecord


def test_the_code_key_is_sealed_in_its_own_field_and_never_reaches_the_app() -> None:
    app_id = uuid.uuid4()
    record = cast(AppRecord, types.SimpleNamespace(id=app_id))
    enclave = X25519KeyPair.generate()
    key = PackageKey.generate()
    payload = configuration_payload(
        record, key, enclave.public_key, app_secrets={"db": "pw"}, ssl_private_key=None
    )
    assert set(payload) == {"uuid", "sealed_code_secret_key", "app_secrets"}
    body = json.dumps(payload).encode()
    assert key.hex().encode() not in body  # sealed, not in clear
    request = ConfigurationRequest.parse(
        body, app_id=app_id, enclave_key=enclave, plaintext_code=False
    )
    assert request.code_key == key
    # Nothing is written at $SEALED_SECRETS_PATH, the app's secrets are its own.
    assert request.sealed_secrets is None
    assert request.app_secrets == {"db": "pw"}
