"""An app as the operator API describes it (``AppOut``), for the owner-side tests.

The client's tests parse it; the CLI's tests serve it from a fake operator.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from confide.wire import LaunchManifest, TlsMode

APP_ID: Final = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000001")


def launch(app_id: uuid.UUID = APP_ID) -> LaunchManifest:
    """The launch manifest of app ``app_id`` (RA-TLS, served at ``<app_id>.confide.test``)."""
    return LaunchManifest(
        runtime_sha256=bytes(range(32)),
        package_sha256=bytes(32),
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=1900000000,
        certificate_sha256=None,
        san=(f"{app_id}.confide.test",),
        subject=f"{app_id}.confide.test",
    )


def app_json(app_id: uuid.UUID = APP_ID, **changes: Any) -> dict[str, Any]:
    """An ``AppOut`` body as the operator sends it, with ``changes`` over its fields."""
    manifest = launch(app_id)
    doc: dict[str, Any] = {
        "id": str(app_id),
        "name": "hello",
        "project": "demo",
        "application": "app:app",
        "healthcheck": "/",
        "plan": "small",
        "expires_at": "2030-03-01T00:00:00Z",
        "tls": "ratls",
        "domain": None,
        "certificate": None,
        "package": {"sha256": "00" * 32, "size": 1234},
        "status": "running",
        "status_detail": None,
        "desired_state": "run",
        "delete_requested": False,
        "domains": [f"{app_id}.confide.test"],
        "router": "127.0.0.1:9443",
        "tee": "simulation",
        "launch": manifest.to_dict(),
        "fingerprint": manifest.measurement().hex(),
        "simulation_root_ca": None,
        "created_at": "2030-01-01T00:00:00Z",
        "updated_at": "2030-01-01T00:00:00Z",
    }
    doc.update(changes)
    return doc
