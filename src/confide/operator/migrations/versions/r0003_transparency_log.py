"""The release transparency log: its leaves and its signed checkpoints (ADR 0019).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Two tables, only ever inserted into: ``log_entries`` (one row per leaf, the
DSSE envelope as hashed, its RFC 9162 leaf hash, what it is about) and
``log_checkpoints`` (one row per tree size, the root and the signed note).
No foreign keys: deleting an account or an app must never touch the log.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("owner_key_id", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("index", name=op.f("pk_log_entries")),
    )
    op.create_index(
        op.f("ix_log_entries_fingerprint"), "log_entries", ["fingerprint"], unique=False
    )
    op.create_index(op.f("ix_log_entries_account_id"), "log_entries", ["account_id"], unique=False)
    op.create_table(
        "log_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_log_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("log_checkpoints")
    op.drop_index(op.f("ix_log_entries_account_id"), table_name="log_entries")
    op.drop_index(op.f("ix_log_entries_fingerprint"), table_name="log_entries")
    op.drop_table("log_entries")
