"""The operator's database: migrations, tokens (hashed at rest), status history; both backends."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from confide.errors import UsageError
from confide.operator import (
    TOKEN_PREFIX,
    Account,
    App,
    Database,
    Project,
    authenticate_token,
    create_token,
    hash_token,
    list_tokens,
    record_created,
    record_status,
    revoke_token,
    status_history,
    upgrade_database,
)
from confide.operator._models import Base
from confide.wire import AppStatus
from support.database import dump

NOW = datetime(2030, 1, 1, tzinfo=UTC)
TABLES = {
    "accounts",
    "api_tokens",
    "projects",
    "apps",
    "app_status_changes",
    "log_entries",
    "log_checkpoints",
    "console_sessions",
    "alembic_version",
}


def test_migrations_build_the_models_schema_on_an_empty_database(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        assert inspect(db.engine).get_table_names() == []
        upgrade_database(db)
        upgrade_database(db)  # idempotent
        assert set(inspect(db.engine).get_table_names()) == TABLES
        with db.engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0004"
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.dispose()


def test_downgrade_to_base_then_up_again(database: Database) -> None:
    upgrade_database_to = upgrade_database
    from alembic import command
    from alembic.config import Config

    from confide.operator._db import _migrations_dir

    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    upgrade_database_to(database)
    assert set(inspect(database.engine).get_table_names()) == TABLES


def test_tokens_are_stored_hashed_only(database: Database, database_url: str) -> None:
    with database.session() as s:
        issued = create_token(s, "alice", now=NOW)
        s.commit()
    assert issued.token.startswith(TOKEN_PREFIX) and len(issued.token) == 47
    stored = dump(database)
    assert hash_token(issued.token) in stored
    assert hash_token(issued.token) == hashlib.sha256(issued.token.encode()).hexdigest()
    secret = issued.token.removeprefix(TOKEN_PREFIX)
    for piece in (issued.token, secret, secret[:8], secret[-8:]):
        assert piece not in stored
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database.dispose()
        assert url.database is not None
        for path in Path(url.database).parent.iterdir():
            assert secret[:12].encode() not in path.read_bytes(), path


def test_token_create_reuses_the_account(database: Database) -> None:
    with database.session() as s:
        a = create_token(s, "alice", now=NOW)
        b = create_token(s, "alice", now=NOW)
        c = create_token(s, "bob", now=NOW)
        s.commit()
        assert s.scalar(select(Account.id).where(Account.name == "alice")) is not None
        assert len(s.scalars(select(Account)).all()) == 2
    assert a.token != b.token
    with database.session() as s:
        tokens = list_tokens(s)
        assert [(t.id, t.account) for t in tokens] == [
            (a.id, "alice"),
            (b.id, "alice"),
            (c.id, "bob"),
        ]
        assert [t.id for t in list_tokens(s, "bob")] == [c.id]


@pytest.mark.parametrize(
    "name",
    ["", "Alice", "-alice", "alice-", "a" * 64, "al ice", "alice/bob", "ålice"],
)
def test_account_names_are_checked(database: Database, name: str) -> None:
    with database.session() as s, pytest.raises(UsageError, match="account name"):
        create_token(s, name, now=NOW)


def test_authenticate_accepts_only_valid_unrevoked_tokens(database: Database) -> None:
    with database.session() as s:
        good = create_token(s, "alice", now=NOW)
        revoked = create_token(s, "alice", now=NOW)
        s.commit()
        revoke_token(s, revoked.id, now=NOW)
        s.commit()
    cases = {
        good.token: True,
        revoked.token: False,
        good.token[:-1] + ("A" if good.token[-1] != "A" else "B"): False,
        good.token[4:]: False,
        good.token + "x": False,
        "": False,
        "cfd_" + "a" * 43: False,
    }
    for token, ok in cases.items():
        with database.session() as s:
            found = authenticate_token(s, token, now=NOW)
        assert (found is not None) is ok, token
        if found is not None:
            assert found.account == "alice" and found.token_id == good.id


def test_last_used_is_recorded_at_most_once_a_minute(database: Database) -> None:
    with database.session() as s:
        issued = create_token(s, "alice", now=NOW)
        s.commit()
    for at, expected in [
        (NOW + timedelta(seconds=1), NOW + timedelta(seconds=1)),
        (NOW + timedelta(seconds=30), NOW + timedelta(seconds=1)),
        (NOW + timedelta(seconds=90), NOW + timedelta(seconds=90)),
    ]:
        with database.session() as s:
            assert authenticate_token(s, issued.token, now=at) is not None
        with database.session() as s:
            (info,) = list_tokens(s)
        assert info.last_used_at == expected


def test_revoke_is_idempotent_and_unknown_ids_fail(database: Database) -> None:
    with database.session() as s:
        issued = create_token(s, "alice", now=NOW)
        s.commit()
        first = revoke_token(s, issued.id, now=NOW)
        second = revoke_token(s, issued.id, now=NOW + timedelta(hours=1))
        assert first.revoked_at == second.revoked_at == NOW
        with pytest.raises(UsageError, match="no token with id 999"):
            revoke_token(s, 999, now=NOW)


def _app(s: object, account_id: int, project_id: int) -> App:
    import uuid

    return App(
        id=uuid.uuid4(),
        account_id=account_id,
        project_id=project_id,
        name="hello",
        application="app:app",
        healthcheck="/",
        plan="small",
        expires_at=NOW + timedelta(days=1),
        tls="ratls",
        package_sha256="00" * 32,
        package_size=1,
        launch_manifest="{}",
        restarts=0,
        created_at=NOW,
        updated_at=NOW,
    )


def test_status_changes_are_kept_in_order_with_aware_times(database: Database) -> None:
    with database.session() as s:
        issued = create_token(s, "alice", now=NOW)
        account = s.scalar(select(Account).where(Account.name == issued.account))
        assert account is not None
        project = Project(account_id=account.id, name="default", created_at=NOW)
        s.add(project)
        s.flush()
        app = _app(s, account.id, project.id)
        record_created(s, app, now=NOW)
        record_status(s, app, AppStatus.RUNNING, now=NOW + timedelta(seconds=5))
        record_status(s, app, AppStatus.ON_ERROR, now=NOW + timedelta(seconds=9), detail="boom")
        s.commit()
        app_id = app.id
    with database.session() as s:
        history = status_history(s, app_id)
        assert [(c.status, c.at, c.detail) for c in history] == [
            ("spawning", NOW, None),
            ("running", NOW + timedelta(seconds=5), None),
            ("on_error", NOW + timedelta(seconds=9), "boom"),
        ]
        row = s.get(App, app_id)
        assert row is not None
        assert (row.status, row.status_detail) == ("on_error", "boom")
        assert row.expires_at.tzinfo is not None and row.expires_at == NOW + timedelta(days=1)


def test_naive_datetimes_are_refused(database: Database) -> None:
    from sqlalchemy.exc import StatementError

    with database.session() as s:
        s.add(Account(name="alice", created_at=datetime(2030, 1, 1)))  # noqa: DTZ001
        with pytest.raises(StatementError, match="naive"):
            s.flush()


def test_migration_0002_stops_all_but_the_oldest_holder_of_a_domain(database_url: str) -> None:
    """A database where the old check-then-insert let two live apps share a domain."""
    db = Database.open(database_url)
    try:
        upgrade_database(db, "0001")
        with db.session() as s:
            issued = create_token(s, "alice", now=NOW)
            account = s.scalar(select(Account).where(Account.name == issued.account))
            assert account is not None
            project = Project(account_id=account.id, name="default", created_at=NOW)
            s.add(project)
            s.flush()
            apps = [_app(s, account.id, project.id) for _ in range(3)]
            for i, app in enumerate(apps):
                # Rows as an older operator wrote them, before its migration: no lifecycle here.
                app.status, app.desired_state, app.delete_requested = "spawning", "run", False
                app.domain = "shop.example.com"
                app.created_at = NOW + timedelta(seconds=i)
                s.add(app)
            s.commit()
            older, newer, newest = (a.id for a in apps)
        upgrade_database(db)
        with db.session() as s:
            rows = {a.id: a for a in s.scalars(select(App))}
            assert rows[older].status == "spawning"
            for app_id in (newer, newest):
                assert rows[app_id].status == "stopped"
                assert rows[app_id].desired_state == "stop"
                assert f"held by app {older}" in (rows[app_id].status_detail or "")
                assert [c.status for c in status_history(s, app_id)] == ["stopped"]
    finally:
        db.dispose()
