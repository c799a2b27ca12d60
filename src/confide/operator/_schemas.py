"""The checks of a new app's manifest (the API's bodies are :mod:`confide.wire.api`'s).

:func:`parse_manifest` turns the ``manifest`` form field of ``POST /api/v1/apps``
into a :class:`ManifestIn` (read as strict JSON, :mod:`confide.strictjson`:
no repeated key, no ``NaN``), then checks what depends on the operator and
the time (the plan exists, the expiry is in the future and within the plan's
longest lifetime, an owner certificate parses, covers the domain and
outlives the app). Every failure is a
:class:`fastapi.exceptions.RequestValidationError` whose ``loc`` names the
field (``["body", "manifest", "<field>"]``): the API answers 422.

Example::

    >>> manifest = parse_manifest(  # doctest: +SKIP
    ...     '{"name": "hello", "application": "app:app", "plan": "small",'
    ...     ' "expires_at": "2030-01-01T00:00:00Z", "tls": "ratls"}',
    ...     plans={"small": Plan("small", 512, 1)}, now=datetime.now(UTC),
    ... )
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from confide.errors import JsonError
from confide.strictjson import loads_object
from confide.wire import MAX_CERTIFICATE_CHAIN, LaunchManifest, TlsMode, uncovered_names
from confide.wire.api import ManifestIn, Plan

#: Largest ``manifest`` form field, in bytes.
MAX_MANIFEST_BYTES: Final = 128 * 1024
#: Most certificates in the owner's chain (the deploy checks it with the same definition).
MAX_CHAIN_LENGTH: Final = MAX_CERTIFICATE_CHAIN

_MANIFEST_LOC: Final = ("body", "manifest")


def validation_error(
    errors: Sequence[tuple[tuple[str | int, ...], str, str]], value: Any = None
) -> RequestValidationError:
    """A 422 naming each field: ``(loc under the manifest, message, type)``."""
    return RequestValidationError(
        [
            {"type": kind, "loc": (*_MANIFEST_LOC, *loc), "msg": msg, "input": value}
            for loc, msg, kind in errors
        ]
    )


def _model_errors(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": e["type"],
                "loc": (*_MANIFEST_LOC, *e["loc"]),
                "msg": e["msg"],
                "input": e["input"] if isinstance(e["input"], str | int | float | None) else None,
            }
            for e in exc.errors(include_url=False, include_context=False)
        ]
    )


def parse_manifest(
    raw: str | bytes, *, plans: Mapping[str, Plan], now: datetime
) -> tuple[ManifestIn, tuple[x509.Certificate, ...] | None]:
    """Parse and check a manifest; the owner's chain is returned parsed (``tls: owner``).

    ``plans``: the operator's plans by name.
    """
    try:
        document = loads_object(raw, what="the manifest", max_bytes=MAX_MANIFEST_BYTES)
    except JsonError as exc:
        raise validation_error([((), exc.message, "json")]) from None
    try:
        manifest = ManifestIn.model_validate(document)
    except ValidationError as exc:
        raise _model_errors(exc) from None
    errors: list[tuple[tuple[str | int, ...], str, str]] = []
    plan = plans.get(manifest.plan)
    if plan is None:
        errors.append(
            (("plan",), f"no plan {manifest.plan!r}; plans: {', '.join(sorted(plans))}", "plan")
        )
    if manifest.expires_at <= now:
        errors.append((("expires_at",), "expires_at must be in the future", "expires_at"))
    elif plan is not None and manifest.expires_at > now + plan.max_lifetime:
        errors.append(
            (
                ("expires_at",),
                f"expires_at {manifest.expires_at.isoformat()} is more than "
                f"{plan.max_lifetime_days} days away, the longest plan {plan.name} allows",
                "expires_at",
            )
        )
    chain: tuple[x509.Certificate, ...] | None = None
    if manifest.tls == TlsMode.OWNER:
        if manifest.domain is None:
            errors.append((("domain",), "tls owner needs the owner's domain", "missing"))
        if manifest.certificate is None:
            errors.append((("certificate",), "tls owner needs a PEM certificate", "missing"))
        else:
            chain, problem = _check_certificate(manifest, now)
            if problem is not None:
                errors.append((("certificate",), problem, "certificate"))
    else:
        for field in ("domain", "certificate"):
            if getattr(manifest, field) is not None:
                errors.append(((field,), f"{field} is only given with tls owner", "extra"))
    if errors:
        raise validation_error(errors)
    return manifest, chain


def _check_certificate(
    manifest: ManifestIn, now: datetime
) -> tuple[tuple[x509.Certificate, ...] | None, str | None]:
    pem = manifest.certificate or ""
    if "PRIVATE KEY" in pem:
        return None, (
            "the certificate field holds a private key: never send it to the operator, "
            "it goes only to the attested enclave"
        )
    try:
        chain = tuple(x509.load_pem_x509_certificates(pem.encode("utf-8")))
    except ValueError as exc:
        return None, f"the certificate is not a PEM certificate chain: {exc}"
    if not 0 < len(chain) <= MAX_CHAIN_LENGTH:
        return None, f"give 1 to {MAX_CHAIN_LENGTH} certificates, got {len(chain)}"
    leaf = chain[0]
    if manifest.domain is not None and uncovered_names(leaf, (manifest.domain,)):
        return chain, f"the certificate does not cover the domain {manifest.domain}"
    if leaf.not_valid_after_utc < manifest.expires_at:
        return chain, (
            f"the certificate expires at {leaf.not_valid_after_utc.isoformat()}, "
            f"before the app (expires_at {manifest.expires_at.isoformat()})"
        )
    if leaf.not_valid_after_utc <= now:
        return chain, "the certificate has expired"
    return chain, None


def build_launch_manifest(
    *,
    app_id: uuid.UUID,
    manifest: ManifestIn,
    chain: Sequence[x509.Certificate] | None,
    package_sha256: bytes,
    runtime_sha256: bytes,
    base_domain: str,
    requirements_sha256: bytes | None = None,
) -> LaunchManifest:
    """The launch inputs the backend will use, hence the app's fingerprint.

    ``ratls``: RA-TLS certificate valid until the app expires, for the app's
    operator domain (also its subject). ``owner``: the owner's leaf
    certificate is measured. ``operator``: plain HTTP behind the router.
    The SANs are the app's operator domain, then the owner's domain; in
    ``owner`` mode only the owner's domain, since the runtime serves the app
    with the owner's certificate, which must cover every SAN and cannot name
    an app id that did not exist when it was issued. The router still routes
    ``<id>.<base-domain>`` to the app.
    """
    app_domain = f"{app_id}.{base_domain}"
    if manifest.tls == TlsMode.OWNER and manifest.domain is not None:
        san: tuple[str, ...] = (manifest.domain,)
    else:
        san = (app_domain,) + ((manifest.domain,) if manifest.domain is not None else ())
    certificate_sha256 = None
    if manifest.tls == TlsMode.OWNER:
        if not chain:
            raise ValueError("an owner-TLS app needs its certificate chain")
        certificate_sha256 = hashlib.sha256(chain[0].public_bytes(Encoding.DER)).digest()
    return LaunchManifest.for_app(
        app_id=app_id,
        application=manifest.application,
        tls=manifest.tls,
        expires_at=manifest.expires_at,
        certificate_sha256=certificate_sha256,
        san=san,
        subject=app_domain if manifest.tls == TlsMode.RATLS else None,
        package_sha256=package_sha256,
        runtime_sha256=runtime_sha256,
        requirements_sha256=requirements_sha256,
    )
