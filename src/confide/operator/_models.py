"""The operator's tables, as SQLAlchemy 2 typed ORM classes.

The schema is created and changed only by the Alembic migrations shipped in
``confide/operator/migrations`` (``alembic upgrade head`` runs at startup);
a test checks that the migrated schema and these classes agree.

Who writes what: the API writes accounts, tokens, projects and app rows, and
asks for a stop or a deletion; the supervisor (the backend) reads them,
starts and stops runtimes, and writes the status, the runtime fields and
``restarts``. ``status``, ``desired_state`` and ``delete_requested`` are
written only by the functions of :mod:`._lifecycle`, which hold the allowed
moves and record each status change in ``app_status_changes``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from confide.wire import (
    APPLICATION_LENGTH,
    DOMAIN_LENGTH,
    HEALTHCHECK_LENGTH,
    NAME_LENGTH,
    AppStatus,
)

#: Column size of a status detail (the other columns' sizes are the API's input limits,
#: :mod:`confide.wire`).
DETAIL_LENGTH: Final = 4096

# Constraint names are fixed so migrations can refer to them on every backend.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="account")


class ApiToken(Base):
    """A bearer token; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    #: Hex SHA-256 of the whole token string.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    account: Mapped[Account] = relationship(back_populates="tokens")


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


#: The statuses in which an app no longer holds its owner's domain (never active again).
DOMAIN_RELEASED: Final = (
    AppStatus.DELETED.value,
    AppStatus.STOPPED.value,
    AppStatus.EXPIRED.value,
)
#: Which apps hold their domain: the condition of the partial unique index on ``domain``.
DOMAIN_HELD: Final = "status NOT IN ({})".format(", ".join(f"'{s}'" for s in DOMAIN_RELEASED))


class App(Base):
    """One deployed app: what was asked, what is measured, and where it is."""

    __tablename__ = "apps"
    __table_args__ = (
        Index("ix_apps_account_id_status", "account_id", "status"),
        # One app at a time holds an owner's domain (lower-case, see the API's pattern):
        # the database refuses the second of two concurrent creates, not a check before it.
        Index(
            "uq_apps_domain_held",
            "domain",
            unique=True,
            sqlite_where=text(DOMAIN_HELD),
            postgresql_where=text(DOMAIN_HELD),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    #: ``module:attribute`` of the ASGI/WSGI app inside the package.
    application: Mapped[str] = mapped_column(String(APPLICATION_LENGTH))
    healthcheck: Mapped[str] = mapped_column(String(HEALTHCHECK_LENGTH))
    plan: Mapped[str] = mapped_column(String(NAME_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    tls: Mapped[str] = mapped_column(String(16))
    #: The owner's domain (``owner`` TLS), served besides ``<id>.<base domain>``.
    domain: Mapped[str | None] = mapped_column(String(DOMAIN_LENGTH))
    #: The owner's certificate chain, PEM (public; its key never reaches the operator).
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    #: Hex SHA-256 of the encrypted package: its blob's name.
    package_sha256: Mapped[str] = mapped_column(String(64), index=True)
    package_size: Mapped[int] = mapped_column(BigInteger)
    #: The canonical launch manifest (``LaunchManifest.to_json()``): the fingerprint's inputs.
    launch_manifest: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    status_detail: Mapped[str | None] = mapped_column(Text)
    desired_state: Mapped[str] = mapped_column(String(8))
    #: The owner asked for deletion: the supervisor marks it deleted once stopped.
    delete_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Filled by the backend.
    runtime_host: Mapped[str | None] = mapped_column(String(255))
    runtime_port: Mapped[int | None] = mapped_column(Integer)
    runtime_pid: Mapped[int | None] = mapped_column(Integer)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    #: When the current run reached ``running`` (uptime), set by the backend.
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    project: Mapped[Project] = relationship()


class AppStatusChange(Base):
    """One status transition of an app (for metrics and audit)."""

    __tablename__ = "app_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class LogEntry(Base):
    """One leaf of the release transparency log (ADR 0019): a DSSE envelope, as received.

    Append-only: rows are only ever inserted, at the next index, together with the
    checkpoint of the grown tree; no foreign key, so nothing cascades into the log.
    """

    __tablename__ = "log_entries"

    #: The leaf's index in the tree (0, 1, 2, ...).
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: The envelope's bytes, exactly as hashed into the leaf.
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    #: RFC 9162 leaf hash, ``SHA-256(0x00 || leaf)``.
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: ``release`` or ``revocation``.
    kind: Mapped[str] = mapped_column(String(16))
    #: Hex launch fingerprint the statement is about.
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    #: The signing owner key's id (hex).
    owner_key_id: Mapped[str] = mapped_column(String(16))
    #: The account that logged it (no foreign key: accounts may go, the log stays).
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the log at one size."""

    __tablename__ = "log_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsoleSession(Base):
    """A signed-in operator console (ADR 0025): only the SHA-256 of its secret id is stored.

    A session speaks for the API token it was signed in with: revoking that token
    ends it (the token's row must be unrevoked at every request), and so does
    deleting it (``ON DELETE CASCADE``).
    """

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Hex SHA-256 of the session id (the cookie's secret value).
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
