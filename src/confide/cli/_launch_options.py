"""Options shared by the commands that describe a launch (``runtime``, ``fingerprint``).

Every option here is measured: the same values give the same fingerprint.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from confide.errors import UsageError

AppIdOpt = Annotated[
    str, typer.Option("--app-id", help="The app's UUID (the configuration must name it).")
]
ApplicationOpt = Annotated[
    str,
    typer.Option("--application", help="The app to serve, module:attribute (ASGI or WSGI)."),
]
PackageOpt = Annotated[Path | None, typer.Option("--package", help="The encrypted code package.")]
AppDirOpt = Annotated[
    Path | None,
    typer.Option("--app-dir", help="A plaintext app folder (local tests; needs --plaincode)."),
]
PlaincodeOpt = Annotated[
    bool, typer.Option("--plaincode", help="Confirm that --app-dir is not encrypted.")
]
RatlsOpt = Annotated[
    int | None,
    typer.Option(
        "--ratls",
        help="Serve the app with the RA-TLS certificate, valid until this UNIX time.",
        min=1,
    ),
]
CertificateOpt = Annotated[
    Path | None,
    typer.Option(
        "--certificate",
        help="Serve the app with this certificate (PEM chain, leaf first); its key comes "
        "in the configuration.",
    ),
]
NoSslOpt = Annotated[
    bool,
    typer.Option("--no-ssl", help="Serve the app over plain HTTP (behind a TLS proxy)."),
]
SanOpt = Annotated[
    list[str] | None,
    typer.Option("--san", help="Subject alternative name of the RA-TLS certificate (repeat)."),
]
SubjectOpt = Annotated[
    str | None,
    typer.Option("--subject", help="Common name of the RA-TLS certificate."),
]


def parse_app_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageError(f"--app-id must be a UUID, got {value!r}") from None
