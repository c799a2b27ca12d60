"""``confide log audit|revoke``: the operator's release transparency log (ADR 0019).

``audit`` replays the whole log of an operator (every entry, its root, the
checkpoint it signed) and checks it extends the last checkpoint this machine
saw from that operator (kept in the user's state folder). ``revoke`` signs a
revocation of a release with the owner key and checks the operator logged it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated

import typer

from confide.client import (
    DEFAULT_TIMEOUT,
    CheckpointStore,
    OperatorClient,
    audit_operator_log,
    log_statement,
    state_dir,
)
from confide.errors import UsageError
from confide.release import LogVerifier, Revocation

from ._account import TokenOpt, UrlOpt, connect_operator
from ._app import app, handle_errors
from ._keys import KeyFileOpt, owner_key_store
from ._output import Output
from ._verify_options import JsonOpt, LogKeyOpt, parse_hex

log_app = typer.Typer(
    help="Audit an operator's release transparency log, or revoke a release.",
    no_args_is_help=True,
)
app.add_typer(log_app, name="log")


@log_app.command("audit")
@handle_errors
def audit_command(
    ctx: typer.Context,
    operator: Annotated[
        str,
        typer.Option("--operator", help="The operator's API URL.", envvar="CONFIDE_OPERATOR_URL"),
    ],
    log_key: LogKeyOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds for each call.", min=0.1, max=600)
    ] = DEFAULT_TIMEOUT,
    json_: JsonOpt = False,
) -> None:
    """Replay the operator's whole log and check it extends the checkpoint seen last."""
    out = Output(json_mode=json_)
    pinned = LogVerifier.from_text(log_key) if log_key is not None else None
    store = CheckpointStore(state_dir(os.environ))
    with OperatorClient(operator, None, timeout=timeout) as client:
        report = audit_operator_log(client, store, log_key=pinned)
    checkpoint = report.checkpoint
    summary = {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root.hex(),
        "releases": report.releases,
        "revocations": report.revocations,
        "owners": sorted(report.owners),
        "extends": report.extends,
    }
    if json_:
        out.json(summary)
        return
    out.out.print(
        f"[bold green]CONSISTENT[/] log {checkpoint.origin}: {checkpoint.size} entries, "
        f"root {checkpoint.root.hex()}"
    )
    out.fields(
        [
            ("releases", str(report.releases)),
            ("revocations", str(report.revocations)),
            ("owners", ", ".join(sorted(report.owners)) or "none"),
            (
                "extends",
                "first audit: this checkpoint is now the one to extend"
                if report.extends is None
                else f"the checkpoint of size {report.extends} seen before",
            ),
        ]
    )


@log_app.command("revoke")
@handle_errors
def revoke_command(
    ctx: typer.Context,
    fingerprint: Annotated[
        str, typer.Argument(help="The release's fingerprint (hex).", show_default=False)
    ],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (published in the log).")
    ] = None,
    key_file: KeyFileOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Revoke a release of yours: users checking your owner key refuse it from now on."""
    out = Output(json_mode=json_)
    value = parse_hex(fingerprint, "FINGERPRINT", 32)
    store = owner_key_store(key_file)
    key = store.load()
    if key is None:
        raise UsageError(f"no owner key in {store.path}", hint="revoke with the key that released")
    envelope = Revocation(value, datetime.now(UTC), reason).sign(key).to_json()
    with connect_operator(ctx, url, token, DEFAULT_TIMEOUT) as client:
        logged = log_statement(
            client, envelope, key.public_key, store=CheckpointStore(state_dir(os.environ))
        )
    if json_:
        out.json({"fingerprint": value.hex(), "log_index": logged.index})
        return
    out.out.print(f"[bold]REVOKED[/] {value.hex()} (log index {logged.index})")
