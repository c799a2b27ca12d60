"""``confide keys create|show``: the owner's release signing key (ADR 0019).

The key lives in the user's config folder (``owner.key``, mode 0600, see
:mod:`confide.client`); ``confide deploy`` signs each release with it and
creates it on first use. ``show`` prints the public key users pass to
``confide verify --owner``, and its short key id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from confide.client import OwnerKeyStore, owner_key_path
from confide.errors import UsageError
from confide.release import OwnerPublicKey

from ._app import app, handle_errors
from ._output import Output
from ._verify_options import JsonOpt

keys_app = typer.Typer(
    help="Create and show the owner key that signs your releases.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="The owner key file (default: owner.key in the config folder).",
        envvar="CONFIDE_OWNER_KEY",
        show_envvar=True,
    ),
]


def owner_key_store(path: Path | None) -> OwnerKeyStore:
    """The key file ``--key-file`` names, else the config folder's (the environment is read
    here, at the entry point)."""
    return OwnerKeyStore(path if path is not None else owner_key_path(os.environ))


def _render(out: Output, key: OwnerPublicKey, path: Path) -> None:
    if out.json_mode:
        out.json({"public_key": key.to_text(), "key_id": key.key_id, "path": str(path)})
        return
    out.out.print(key.to_text())
    out.info(f"key id {key.key_id}, in {path}; give the public key to your users")


@keys_app.command("create")
@handle_errors
def create_command(ctx: typer.Context, key_file: KeyFileOpt = None, json_: JsonOpt = False) -> None:
    """Create the owner key (never overwrites one) and print its public key."""
    store = owner_key_store(key_file)
    key = store.create()
    _render(Output(json_mode=json_), key.public_key, store.path)


@keys_app.command("show")
@handle_errors
def show_command(ctx: typer.Context, key_file: KeyFileOpt = None, json_: JsonOpt = False) -> None:
    """Print the owner key's public key and key id."""
    store = owner_key_store(key_file)
    key = store.load()
    if key is None:
        raise UsageError(
            f"no owner key in {store.path}",
            hint="run `confide keys create` (or deploy once: it creates one)",
        )
    _render(Output(json_mode=json_), key.public_key, store.path)
