"""One app at a time holds an owner's domain: a partial unique index on ``apps.domain``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

The API checked the domain and then inserted, so two concurrent creates could
both win. The index covers the apps that hold their domain (any status but
deleted, stopped and expired, which never become active again); both SQLite
and PostgreSQL support such partial indexes.

A database that already holds two live apps for one domain cannot take the
index: the oldest app keeps the domain, the others are stopped, their status
detail saying why and recorded in their status history, before the index is
built.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen here (a migration must not follow later changes of the models).
_RELEASED = ("deleted", "stopped", "expired")
_HELD = "status NOT IN ('deleted', 'stopped', 'expired')"


def _stop_duplicates() -> None:
    apps = sa.table(
        "apps",
        sa.column("id", sa.Uuid()),
        sa.column("domain", sa.String()),
        sa.column("status", sa.String()),
        sa.column("status_detail", sa.Text()),
        sa.column("desired_state", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    changes = sa.table(
        "app_status_changes",
        sa.column("app_id", sa.Uuid()),
        sa.column("status", sa.String()),
        sa.column("detail", sa.Text()),
        sa.column("at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(apps.c.id, apps.c.domain)
        .where(apps.c.domain.is_not(None), apps.c.status.not_in(_RELEASED))
        .order_by(apps.c.domain, apps.c.created_at, apps.c.id)
    ).all()
    now = datetime.now(UTC)
    holder: dict[str, object] = {}
    for app_id, domain in rows:
        if domain not in holder:
            holder[domain] = app_id
            continue
        detail = f"stopped by migration 0002: the domain {domain} is held by app {holder[domain]}"
        bind.execute(
            sa.update(apps)
            .where(apps.c.id == app_id)
            .values(status="stopped", status_detail=detail, desired_state="stop", updated_at=now)
        )
        bind.execute(
            sa.insert(changes).values(app_id=app_id, status="stopped", detail=detail, at=now)
        )


def upgrade() -> None:
    _stop_duplicates()
    op.create_index(
        "uq_apps_domain_held",
        "apps",
        ["domain"],
        unique=True,
        sqlite_where=sa.text(_HELD),
        postgresql_where=sa.text(_HELD),
    )


def downgrade() -> None:
    op.drop_index("uq_apps_domain_held", table_name="apps")
