"""An app as the operator API describes it (:class:`confide.wire.api.AppRecord`), for the
owner-side tests.

The client's tests parse it; the CLI's tests serve it from a fake operator.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

from confide.wire import AppStatus, DesiredState, HostPort, LaunchManifest, TlsMode
from confide.wire.api import AppRecord, PackageDigest

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


def app_record(app_id: uuid.UUID = APP_ID) -> AppRecord:
    """App ``app_id`` as the operator describes it: RA-TLS, running, on the simulated TEE."""
    manifest = launch(app_id)
    return AppRecord(
        id=app_id,
        name="hello",
        project="demo",
        application="app:app",
        healthcheck="/",
        plan="small",
        expires_at=datetime(2030, 3, 1, tzinfo=UTC),
        tls=TlsMode.RATLS,
        domain=None,
        certificate=None,
        package=PackageDigest(sha256=bytes(32), size=1234),
        status=AppStatus.RUNNING,
        status_detail=None,
        desired_state=DesiredState.RUN,
        delete_requested=False,
        domains=(f"{app_id}.confide.test",),
        router=HostPort("127.0.0.1", 9443),
        tee="simulation",
        launch=manifest,
        fingerprint=manifest.measurement(),
        simulation_root_ca=None,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
        updated_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def app_json(app_id: uuid.UUID = APP_ID, **changes: Any) -> dict[str, Any]:
    """The body the operator sends for :func:`app_record`, with ``changes`` over its fields."""
    doc: dict[str, Any] = app_record(app_id).model_dump(mode="json", by_alias=True)
    doc.update(changes)
    return doc
