"""Applying a configuration: open the code, seal the state, write the secrets.

:class:`Configurator` is a plain object with no network: the configuration
endpoint hands it request bodies; on a restart the runtime calls
:meth:`Configurator.resume` with the unsealed state instead. Either way the
result is an :class:`AppLaunch`: what the app server needs.

Order of :meth:`Configurator.configure`, each step only once the previous
passed: authenticate (the app id) and parse, all in memory; check the owner's
key against the owner's certificate; decrypt the package into the RAM code
folder; seal the state; write the secrets files. A failure answers 400 and
leaves nothing behind, so the owner can retry.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from confide.crypto import PackageKey, X25519KeyPair
from confide.errors import CryptoError, TeeError, UsageError
from confide.wire import TlsMode, key_matches_certificate, uncovered_names

from ._payload import ConfigurationRejected, ConfigurationRequest
from ._settings import OwnerCertificate, RuntimeSettings
from ._state import SealedState, StateStore
from ._workspace import Workspace


@dataclass(frozen=True, slots=True)
class AppLaunch:
    """What the app server needs once the runtime is configured."""

    #: The app's environment additions (SECRETS_PATH, SEALED_SECRETS_PATH, HOME).
    env: Mapping[str, str]
    #: The owner's TLS private key (certificate mode), PEM; ``None`` otherwise.
    owner_key_pem: bytes | None = field(repr=False)


def check_owner_key(certificate: OwnerCertificate, key_pem: bytes, san: tuple[str, ...]) -> None:
    """Refuse (400) a key that is not the certificate's, or a certificate missing a SAN."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not key_matches_certificate(key, certificate.leaf):
        raise ConfigurationRejected(
            400,
            "configuration.ssl_private_key",
            "ssl_private_key does not match the --certificate the runtime was launched with",
        )
    missing = uncovered_names(certificate.leaf, san)
    if missing:
        raise ConfigurationRejected(
            400,
            "configuration.certificate_san",
            f"the --certificate does not cover the --san name(s) {', '.join(missing)}",
        )


class Configurator:
    """Turns the owner's configuration (or the sealed state) into a running app's inputs."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        state: SealedState,
        store: StateStore | None,
        workspace: Workspace,
    ) -> None:
        self._settings = settings
        self._state = state
        self._store = store
        self._workspace = workspace
        self._enclave_key = X25519KeyPair.from_private_key(state.enclave_private_key)

    @property
    def app_id(self) -> uuid.UUID:
        return self._settings.app_id

    def configure(self, body: bytes) -> AppLaunch:
        """Apply one configuration request; raise :class:`ConfigurationRejected` if refused."""
        settings = self._settings
        request = ConfigurationRequest.parse(
            body,
            app_id=settings.app_id,
            enclave_key=self._enclave_key,
            plaintext_code=settings.code.plaintext,
            certificate_mode=settings.tls == TlsMode.OWNER,
        )
        if settings.certificate is not None and request.ssl_private_key_pem is not None:
            check_owner_key(settings.certificate, request.ssl_private_key_pem, settings.san)
        try:
            self._workspace.install_code(settings.code, request.code_key)
        except CryptoError as exc:
            raise ConfigurationRejected(
                400,
                "configuration.code_secret_key",
                f"the package does not open with code_secret_key: {exc}",
            ) from None
        except UsageError as exc:
            raise ConfigurationRejected(500, "configuration.code", str(exc)) from None
        state = dataclasses.replace(
            self._state,
            configured=True,
            code_key=request.code_key.secret if request.code_key is not None else None,
            app_secrets=request.app_secrets,
            sealed_secrets=request.sealed_secrets,
            ssl_private_key_pem=request.ssl_private_key_pem,
        )
        try:
            if self._store is not None:  # None on TDX: nothing is sealed (ADR 0020)
                self._store.save(state)
        except (OSError, TeeError) as exc:
            self._workspace.uninstall_code()
            raise ConfigurationRejected(
                500, "configuration.seal", f"cannot seal the state: {exc}"
            ) from None
        self._state = state
        return self._launch(request.app_secrets, request.sealed_secrets, state)

    def resume(self) -> AppLaunch:
        """Reinstall the app from the unsealed, configured state (a restart)."""
        state = self._state
        if not state.configured:
            raise UsageError("the runtime was never configured: nothing to resume")
        key = PackageKey(state.code_key) if state.code_key is not None else None
        self._workspace.install_code(self._settings.code, key)
        return self._launch(state.app_secrets, state.sealed_secrets, state)

    def _launch(
        self,
        app_secrets: Mapping[str, Any] | None,
        sealed_secrets: Mapping[str, Any] | None,
        state: SealedState,
    ) -> AppLaunch:
        env = self._workspace.write_secrets(app_secrets, sealed_secrets)
        return AppLaunch(env=env, owner_key_pem=state.ssl_private_key_pem)
