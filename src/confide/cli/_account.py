"""The owner's commands against an operator: sign in, list, inspect, read logs, stop, export.

``confide login --url URL --token TOKEN`` checks the token (``GET /me``) and
only then stores it (see :mod:`confide.client._credentials`); every other
command uses the stored URL and token unless ``--url`` / ``--token`` (or
``CONFIDE_URL`` / ``CONFIDE_TOKEN``) say otherwise. A stored token is only
ever sent to the URL it was stored with.

Exit codes: 0 done; 1 the owner declined the confirmation of ``stop``;
2 the command could not run (not signed in, the operator refused or could not
be reached, no such app); 130 ``logs --follow`` interrupted.

Injection seam (tests, or a program embedding the CLI): commands build their
:class:`~confide.client.OperatorClient` with :func:`operator_client`, which
looks up a :class:`ClientSeams` on the click context chain
(``ctx.find_object``). Production has none. To inject one, run the real app
under a parent group whose callback sets it::

    outer = typer.Typer()

    @outer.callback()
    def _seams(ctx: typer.Context) -> None:
        ctx.obj = ClientSeams(transport=httpx.MockTransport(handler))

    outer.add_typer(app, name="confide")
    CliRunner().invoke(outer, ["confide", "list"])

Example::

    $ confide login --url https://operator.example --token "$TOKEN"
    $ confide list
    $ confide context --export 0f0f0f0f-0000-4000-8000-000000000001 --output hello.json
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import urlsplit

import httpx
import typer

from confide.client import (
    DEFAULT_TIMEOUT,
    AppContext,
    Credentials,
    CredentialsStore,
    OperatorClient,
    credentials_path,
    normalize_url,
)
from confide.errors import UsageError
from confide.runtime import runtime_code_hash

if TYPE_CHECKING:  # the API bodies are imported when used (they slow the CLI's start)
    from confide.wire.api import AppRecord

from ._app import app, handle_errors
from ._output import Output, escape
from ._verify_options import JsonOpt

#: Exit code of ``logs --follow`` stopped with Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED: Final = 130
#: Exit code when the owner answers no to a confirmation.
EXIT_DECLINED: Final = 1


@dataclass(frozen=True, slots=True)
class ClientSeams:
    """What a parent context may inject into these commands (see the module's description).

    ``transport`` replaces the network for the operator client; ``interactive``
    overrides whether stdin is taken for a terminal (confirmations, prompts).
    """

    transport: httpx.BaseTransport | None = None
    interactive: bool | None = None


UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The operator's API URL (default: the one you logged in to).",
        envvar="CONFIDE_URL",
        show_envvar=True,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="An API token (default: the stored one).",
        envvar="CONFIDE_TOKEN",
        show_envvar=True,
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="Seconds to wait to connect and for each answer.",
        envvar="CONFIDE_TIMEOUT",
        min=0.1,
        max=3600,
    ),
]
AppIdArg = Annotated[
    str, typer.Argument(help="The app's ID (a UUID).", metavar="APP_ID", show_default=False)
]


# -- building blocks -------------------------------------------------------------------------


def _store() -> CredentialsStore:
    """The credentials file; the environment (``XDG_CONFIG_HOME``) is read here, at the entry."""
    return CredentialsStore(credentials_path(os.environ))


def resolve_credentials(url: str | None, token: str | None, store: CredentialsStore) -> Credentials:
    """The URL and token to use: the options (or environment) first, then the stored ones.

    The stored token goes only to the stored URL: ``--url`` naming another
    operator needs ``--token`` too.
    """
    if url is not None and token is not None:
        return Credentials(url, token)
    stored = store.load()
    login = "run `confide login --url URL --token TOKEN` (or set CONFIDE_URL and CONFIDE_TOKEN)"
    if stored is None:
        missing = "no token" if token is None else "no operator URL"
        raise UsageError(f"not logged in: {missing} given and none stored", hint=login)
    if url is None:
        return Credentials(stored.url, token if token is not None else stored.token)
    if normalize_url(url) != stored.url:
        raise UsageError(
            f"no token for {normalize_url(url)}: the stored one is for {stored.url}",
            hint="give --token (or CONFIDE_TOKEN), or log in to that operator",
        )
    return stored


def operator_client(ctx: typer.Context, credentials: Credentials, timeout: float) -> OperatorClient:
    """The client the commands use; a :class:`ClientSeams` on the context chain may inject."""
    seams = ctx.find_object(ClientSeams)
    transport = seams.transport if seams is not None else None
    return OperatorClient(credentials.url, credentials.token, transport=transport, timeout=timeout)


def interactive(ctx: typer.Context) -> bool:
    """Whether to ask questions: the seams say, else whether stdin is a terminal."""
    seams = ctx.find_object(ClientSeams)
    if seams is not None and seams.interactive is not None:
        return seams.interactive
    return sys.stdin.isatty()


def connect_operator(
    ctx: typer.Context, url: str | None, token: str | None, timeout: float
) -> OperatorClient:
    """A client for the ``--url``/``--token``/``--timeout`` options (what ``deploy`` reuses)."""
    return operator_client(ctx, resolve_credentials(url, token, _store()), timeout)


def _cleartext(url: str) -> bool:
    """An ``http://`` URL to another machine: the token would travel in clear."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _expires(record: AppRecord) -> str:
    return record.expires_at.strftime("%Y-%m-%d %H:%M %Z").strip()


# -- commands --------------------------------------------------------------------------------


@app.command("login")
@handle_errors
def login_command(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            help="The operator's API URL, e.g. https://operator.example.",
            envvar="CONFIDE_URL",
            show_envvar=True,
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Your API token (asked for, hidden, when not given and stdin is a terminal).",
            envvar="CONFIDE_TOKEN",
            show_envvar=True,
        ),
    ] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Check an API token with the operator, then store it for the other commands."""
    out = Output()
    if token is None:
        if not interactive(ctx):
            raise UsageError("no token: give --token or CONFIDE_TOKEN (stdin is not a terminal)")
        token = typer.prompt("API token", hide_input=True, err=True)
    credentials = Credentials(url, token.strip())
    if _cleartext(credentials.url):
        out.warn(f"{credentials.url} is plain HTTP to another machine: the token travels in clear")
    with operator_client(ctx, credentials, timeout) as client:
        account = client.me()
    store = _store()
    store.save(credentials)
    out.out.print(
        f"logged in to {escape(credentials.url)} as {escape(account.account)} "
        f"({account.apps} of {account.max_apps} apps)"
    )
    out.info(f"token stored in {store.path}")


@app.command("logout")
@handle_errors
def logout_command(ctx: typer.Context) -> None:
    """Forget the stored token (the operator keeps it valid until it is revoked)."""
    store = _store()
    out = Output()
    if store.delete():
        out.out.print(f"logged out: removed {escape(str(store.path))}")
    else:
        out.out.print("not logged in: nothing to remove")


@app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", help="Only the apps of this project.")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_: JsonOpt = False,
) -> None:
    """Your apps on the operator (not the deleted ones), oldest first."""
    with connect_operator(ctx, url, token, timeout) as client:
        records = client.list_apps(project)
    out = Output(json_mode=json_)
    if json_:
        out.json({"apps": [r.to_dict() for r in records]})
        return
    if not records:
        out.info("no apps")
        return
    out.table(
        ("id", "name", "status", "tls", "domain", "expires"),
        (
            (str(r.id), r.name, r.status.value, r.tls.value, r.domain or r.domains[0], _expires(r))
            for r in records
        ),
    )


@app.command("status")
@handle_errors
def status_command(
    ctx: typer.Context,
    app_id: AppIdArg,
    url: UrlOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_: JsonOpt = False,
) -> None:
    """An app's status, where it is served, and the inputs of its fingerprint."""
    with connect_operator(ctx, url, token, timeout) as client:
        record = client.get_app(app_id)
    out = Output(json_mode=json_)
    if not record.fingerprint_agrees:
        out.warn(
            f"the operator reports the fingerprint {record.operator_fingerprint.hex()}, but the "
            f"launch manifest it sent measures {record.fingerprint.hex()}: "
            "only the recomputed one is shown and checked"
        )
    ours = record.launch.runtime_sha256 == runtime_code_hash()
    if json_:
        out.json({**record.to_dict(), "runtime_is_this_release": ours})
        return
    launch = record.launch
    status = record.status.value + (f" ({record.status_detail})" if record.status_detail else "")
    rows: list[tuple[str, str]] = [
        ("id", str(record.id)),
        ("name", f"{record.name} (project {record.project})"),
        ("status", status),
        ("tls", record.tls.value),
        ("domains", ", ".join(record.domains)),
        ("router", str(record.router)),
        ("tee", record.tee),
        ("expires", record.expires_at.isoformat()),
        ("fingerprint", record.fingerprint.hex()),
        ("application", launch.application),
        ("package_sha256", launch.package_sha256.hex()),
        (
            "runtime_sha256",
            launch.runtime_sha256.hex()
            + (" (this Confide)" if ours else " (not this Confide's release: check it)"),
        ),
        ("launch_tls", launch.tls.launch),
        ("ratls_expiry", str(launch.ratls_expiry) if launch.ratls_expiry is not None else "-"),
        (
            "certificate_sha256",
            launch.certificate_sha256.hex() if launch.certificate_sha256 is not None else "-",
        ),
        ("san", ", ".join(launch.san) or "-"),
        ("subject", launch.subject or "-"),
    ]
    out.fields(rows)


@app.command("logs")
@handle_errors
def logs_command(
    ctx: typer.Context,
    app_id: AppIdArg,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new output until the app stops."),
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", help="Only the last N lines.", min=0)
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """An app's output (stdout and stderr of its runtime)."""
    with connect_operator(ctx, url, token, timeout) as client:
        if not follow:
            sys.stdout.write(client.logs(app_id, tail=tail))
            sys.stdout.flush()
            return
        lines = client.follow_logs(app_id, tail=tail)
        try:
            for line in lines:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            lines.close()


@app.command("stop")
@handle_errors
def stop_command(
    ctx: typer.Context,
    app_id: AppIdArg,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the app too (it cannot be started again).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Stop an app (and with --delete, delete it); asks first unless -y."""
    out = Output()
    with connect_operator(ctx, url, token, timeout) as client:
        record = client.get_app(app_id)
        action = "stop and delete" if delete else "stop"
        if not yes:
            if not interactive(ctx):
                raise UsageError(
                    f"{action} {record.id} needs confirmation: give -y (stdin is not a terminal)"
                )
            question = f"{action.capitalize()} the app {record.name} ({record.id})?"
            if not typer.confirm(question, default=False, err=True):
                out.info("nothing done")
                raise typer.Exit(EXIT_DECLINED)
        done = client.delete_app(record.id) if delete else client.stop_app(record.id)
    what = "deletion" if delete else "stop"
    out.out.print(f"{done.id}: {what} requested (status {done.status.value})")


@app.command("context")
@handle_errors
def context_command(
    ctx: typer.Context,
    export: Annotated[
        str,
        typer.Option(
            "--export",
            help="The ID of the app whose context to write.",
            metavar="APP_ID",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (default: stdout)."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Write an app's context file: where it is and what it must prove (no secret in it).

    Users verify the app with it (confide verify).
    """
    with connect_operator(ctx, url, token, timeout) as client:
        record = client.get_app(export)
        context = AppContext.from_record(record, client.base_url)
    if output is None:
        sys.stdout.write(context.to_json())
        sys.stdout.flush()
        return
    context.save(output)
    Output().info(f"wrote the context of {context.app_id} to {output}")
