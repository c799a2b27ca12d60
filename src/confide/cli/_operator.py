"""``confide operator``: administer an operator service (tokens, database migrations).

Exit codes: 0 done; 2 the command could not run (bad option, unreachable
database, no such token).

Every command migrates the database to the current schema first (``migrate``
does only that). A token is printed once, on stdout, when it is created; the
operator keeps only its SHA-256.

Example::

    $ export CONFIDE_OPERATOR_DATA=/var/lib/confide
    $ confide operator migrate
    $ confide operator token create --account alice
    cfd_Q2xv...
    $ confide operator token list
    $ confide operator token revoke 1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from confide.errors import UsageError
from confide.operator import (
    Database,
    OperatorSettings,
    TokenInfo,
    create_token,
    list_tokens,
    revoke_token,
    upgrade_database,
)
from confide.runtime import runtime_code_hash

from ._app import app, handle_errors
from ._output import Output

__all__ = ["operator_app"]

operator_app = typer.Typer(
    help="Administer the operator service: API tokens and the database (exit 0 done, 2 unusable).",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
operator_app.add_typer(token_app, name="token")
app.add_typer(operator_app, name="operator")

DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="The operator's data folder (database, packages, logs, operator.toml).",
        envvar="CONFIDE_OPERATOR_DATA",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The operator's TOML configuration (default: DATA_DIR/operator.toml if present).",
        envvar="CONFIDE_OPERATOR_CONFIG",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the database (default: SQLite in the data folder).",
        envvar="CONFIDE_OPERATOR_DATABASE_URL",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _settings(data_dir: Path, config: Path | None, database_url: str | None) -> OperatorSettings:
    return OperatorSettings.load(
        data_dir,
        runtime_sha256=runtime_code_hash(),
        config_file=config,
        database_url=database_url,
    )


@contextmanager
def _migrated(settings: OperatorSettings) -> Iterator[Session]:
    """A session on the migrated database; database errors become one line."""
    database = Database.open(settings.database_url)
    try:
        upgrade_database(database)
        with database.session() as session:
            yield session
    except SQLAlchemyError as exc:
        raise UsageError(
            f"database error on {settings.database_url_for_display()}: "
            f"{exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"
        ) from exc
    finally:
        database.dispose()


def _token_dict(info: TokenInfo) -> dict[str, object]:
    return {
        "id": info.id,
        "account": info.account,
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@operator_app.command("migrate")
@handle_errors
def operator_migrate(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Create or upgrade the database schema (alembic upgrade head)."""
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings):
        pass
    Output().info(f"database {settings.database_url_for_display()} is up to date")


@token_app.command("create")
@handle_errors
def token_create(
    ctx: typer.Context,
    account: Annotated[
        str, typer.Option("--account", help="The account (created if it does not exist).")
    ],
    data_dir: DataDirOpt,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Issue an API token for ACCOUNT and print it once (only its SHA-256 is kept)."""
    output = Output(json_mode=json_)
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings) as session:
        issued = create_token(session, account, now=datetime.now(UTC))
        session.commit()
    if json_:
        output.json(
            {
                "id": issued.id,
                "account": issued.account,
                "token": issued.token,
                "created_at": issued.created_at.isoformat(),
            }
        )
        return
    output.out.print(issued.token)
    output.info(
        f"token {issued.id} for account {issued.account}: shown only this once, keep it secret"
    )


@token_app.command("list")
@handle_errors
def token_list(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    account: Annotated[
        str | None, typer.Option("--account", help="Only this account's tokens.")
    ] = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List tokens (never their secret)."""
    output = Output(json_mode=json_)
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings) as session:
        tokens = list_tokens(session, account)
    if json_:
        output.json({"tokens": [_token_dict(t) for t in tokens]})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "account", "created", "last used", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            str(t.id),
            t.account,
            t.created_at.isoformat(timespec="seconds"),
            t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "-",
            t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-",
        )
    output.out.print(table)


@token_app.command("revoke")
@handle_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(help="The token's id (see token list).", min=1)],
    data_dir: DataDirOpt,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    output = Output(json_mode=json_)
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings) as session:
        info = revoke_token(session, token_id, now=datetime.now(UTC))
        session.commit()
    if json_:
        output.json(_token_dict(info))
        return
    output.out.print(f"revoked token {info.id} of account {info.account}")
