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
    $ confide operator serve --api 127.0.0.1:8080 --router 0.0.0.0:443 \\
        --base-domain apps.example.com
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from confide.errors import UsageError
from confide.runtime import runtime_code_hash
from confide.wire import HostPort

from ._app import app, handle_errors
from ._output import Output, stderr_logger
from ._verify_options import JsonOpt

# The operator (SQLAlchemy, FastAPI) is imported only by its own commands: the
# enclave runtime, started through the same CLI, never loads it (ADR 0005).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from confide.operator import OperatorAddresses, OperatorSettings, TokenInfo

operator_app = typer.Typer(
    help="Administer the operator service: API tokens and the database (exit 0 done, 2 unusable).",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
operator_app.add_typer(token_app, name="token")
app.add_typer(operator_app, name="operator")

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The operator's data folder (database, packages, logs, operator.toml). "
        "Default: $XDG_DATA_HOME/confide/operator (~/.local/share/confide/operator).",
        envvar="CONFIDE_OPERATOR_DATA",
        show_default=False,
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


def _data_dir(given: Path | None) -> Path:
    """``--data-dir``, else the XDG data folder; the environment is read here, at the entry."""
    from confide.operator import default_data_dir

    return given if given is not None else default_data_dir(os.environ)


def _settings(
    data_dir: Path | None, config: Path | None, database_url: str | None, **overrides: object
) -> OperatorSettings:
    from confide.operator import OperatorSettings

    return OperatorSettings.load(
        _data_dir(data_dir),
        runtime_sha256=runtime_code_hash(),
        config_file=config,
        database_url=database_url,
        **overrides,
    )


def _database_error(settings: OperatorSettings, exc: Exception) -> UsageError:
    return UsageError(
        f"database error on {settings.database_url_for_display()}: "
        f"{exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}"
    )


@contextmanager
def _migrated(settings: OperatorSettings) -> Iterator[Session]:
    """A session on the migrated database; database errors become one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from confide.operator import Database, upgrade_database

    database = Database.open(settings.database_url)
    try:
        upgrade_database(database)
        with database.session() as session:
            yield session
    except SQLAlchemyError as exc:
        raise _database_error(settings, exc) from exc
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
    data_dir: DataDirOpt = None,
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
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Issue an API token for ACCOUNT and print it once (only its SHA-256 is kept)."""
    output = Output(json_mode=json_)
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings) as session:
        from confide.operator import create_token

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
    data_dir: DataDirOpt = None,
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
        from confide.operator import list_tokens

        tokens = list_tokens(session, account)
    if json_:
        output.json({"tokens": [_token_dict(t) for t in tokens]})
        return
    output.table(
        ("id", "account", "created", "last used", "revoked"),
        (
            (
                str(t.id),
                t.account,
                t.created_at.isoformat(timespec="seconds"),
                t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "-",
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-",
            )
            for t in tokens
        ),
    )


@token_app.command("revoke")
@handle_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(help="The token's id (see token list).", min=1)],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    output = Output(json_mode=json_)
    settings = _settings(data_dir, config, database_url)
    with _migrated(settings) as session:
        from confide.operator import revoke_token

        info = revoke_token(session, token_id, now=datetime.now(UTC))
        session.commit()
    if json_:
        output.json(_token_dict(info))
        return
    output.out.print(f"revoked token {info.id} of account {info.account}")


# -- serve -----------------------------------------------------------------------------------


@operator_app.command("serve")
@handle_errors
def operator_serve(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="HOST:PORT of the REST API (port 0: any free port). Default from the config.",
            envvar="CONFIDE_OPERATOR_API",
        ),
    ] = None,
    router: Annotated[
        str | None,
        typer.Option(
            "--router",
            help="HOST:PORT of the router, the apps' TLS front door (port 0: any free port).",
            envvar="CONFIDE_OPERATOR_ROUTER",
        ),
    ] = None,
    base_domain: Annotated[
        str | None,
        typer.Option(
            "--base-domain",
            help="Apps are served at <app-id>.BASE_DOMAIN.",
            envvar="CONFIDE_OPERATOR_BASE_DOMAIN",
        ),
    ] = None,
    stop_apps_on_exit: Annotated[
        bool,
        typer.Option(
            "--stop-apps-on-exit",
            help="Stop every app's runtime when the operator stops (default: leave them "
            "running; the next operator adopts them).",
        ),
    ] = False,
) -> None:
    """Run the operator: the API, the router and the apps' runtimes, until SIGINT or SIGTERM.

    Where the API and the router listen is printed on stderr and written to
    DATA_DIR/operator.json.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from confide.operator import SupervisorOptions, run_operator

    overrides: dict[str, object] = {"base_domain": base_domain}
    if api is not None:
        overrides["api_host"], overrides["api_port"] = HostPort.parse(
            api, "--api", allow_port_zero=True
        )
    if router is not None:
        overrides["router_host"], overrides["router_port"] = HostPort.parse(
            router, "--router", allow_port_zero=True
        )
    settings = _settings(data_dir, config, database_url, **overrides)
    logger = stderr_logger("confide")  # every confide.* logger below the CLI
    output = Output()

    def ready(addresses: OperatorAddresses) -> None:
        output.info(
            f"operator API on {addresses.api_url}, router on {addresses.router} "
            f"(apps at <app-id>.{settings.base_domain}); stop with Ctrl-C"
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_operator(
            settings,
            shutdown_trigger=stop.wait,
            options=SupervisorOptions(stop_apps_on_exit=stop_apps_on_exit),
            on_ready=ready,
            logger=logger.getChild("operator"),
        )

    try:
        asyncio.run(main())
    except SQLAlchemyError as exc:
        raise _database_error(settings, exc) from exc
    output.info("operator stopped")
