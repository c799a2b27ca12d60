"""``confide gramine``: the Gramine manifest of a launch, its linter, and MRENCLAVE prediction.

``confide gramine manifest`` renders the manifest (:func:`confide.gramine.gramine_manifest`)
of a launch manifest and lints it before writing it; ``confide gramine lint`` lints a
manifest and, unless told not to, runs the runtime's imports with the manifest's own
interpreter and path and refuses any imported file that is not trusted.
``confide fingerprint --tee gramine`` predicts MRENCLAVE with Gramine's own
``gramine-sgx-sign`` and ``gramine-sgx-sigstruct-view`` (:func:`predict_mrenclave`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Final

import typer

from confide import strictjson
from confide.client import read_bounded
from confide.errors import JsonError, ManifestError, UsageError
from confide.gramine import (
    DEFAULT_ENCLAVE_SIZE,
    DEFAULT_MAX_THREADS,
    RUNTIME_MODULES,
    imported_files,
    lint_manifest,
    render_app,
    runtime_environment,
)
from confide.runtime import read_lock
from confide.wire import LaunchManifest

from ._app import app, handle_errors
from ._output import Output

MAX_MANIFEST_FILE: Final = 16 * 1024 * 1024
MAX_LAUNCH_FILE: Final = 64 * 1024

gramine_app = typer.Typer(
    help="The Gramine manifest of a launch, and its linter.", no_args_is_help=True
)
app.add_typer(gramine_app, name="gramine")

RequirementOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--requirement",
        help="A distribution the app imports (repeat); it and its requirements are trusted.",
    ),
]
EnclaveSizeOpt = Annotated[
    str, typer.Option("--enclave-size", help="sgx.enclave_size, e.g. 2G (the plan's).")
]
MaxThreadsOpt = Annotated[
    int, typer.Option("--max-threads", help="sgx.max_threads (the plan's).", min=1)
]


#: The linted :func:`confide.gramine.app_manifest` of a launch (what the operator launches).
render_manifest = render_app


def read_launch_manifest(path: Path) -> LaunchManifest:
    """A launch manifest from a JSON file: the manifest itself, or an object holding it
    under ``"manifest"`` (the operator's app record, a context file, fingerprint --json)."""
    raw = read_bounded(path, "launch manifest", MAX_LAUNCH_FILE)
    try:
        obj = strictjson.loads(raw, what=str(path), max_bytes=MAX_LAUNCH_FILE)
    except JsonError as exc:
        raise UsageError(str(exc)) from None
    if isinstance(obj, dict) and isinstance(obj.get("manifest"), dict):
        obj = obj["manifest"]
    return LaunchManifest.from_dict(obj)


@gramine_app.command("manifest")
@handle_errors
def manifest_command(
    ctx: typer.Context,
    launch_file: Annotated[
        Path,
        typer.Option(
            "--manifest",
            help="The launch manifest (JSON: the operator's app record, a context file, or "
            "confide fingerprint --json).",
        ),
    ],
    requirement: RequirementOpt = None,
    enclave_size: EnclaveSizeOpt = DEFAULT_ENCLAVE_SIZE,
    max_threads: MaxThreadsOpt = DEFAULT_MAX_THREADS,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the manifest here (default: stdout).")
    ] = None,
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            help="The app's requirements lock, when the launch measures one (it and its "
            "wheels, wheels/<ab>/<cdef...> beside it, become trusted files with its hashes).",
        ),
    ] = None,
) -> None:
    """Print the Gramine manifest that launches this launch manifest in this environment."""
    launch = read_launch_manifest(launch_file)
    lock = read_lock(requirements) if requirements is not None else None
    env = runtime_environment(tuple(requirement or ()))
    text = render_manifest(
        launch, env, enclave_size=enclave_size, max_threads=max_threads, lock=lock
    )
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    Output().info(f"wrote {output} ({len(env.files)} trusted files)")


@gramine_app.command("lint")
@handle_errors
def lint_command(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="The Gramine manifest (TOML).")],
    module: Annotated[
        list[str] | None,
        typer.Option("--module", help="Also import this module (the app's imports; repeat)."),
    ] = None,
    unsafe_skip_imports: Annotated[
        bool,
        typer.Option(
            "--unsafe-skip-imports",
            help="Do not run the runtime's imports (then an untrusted import is not caught).",
        ),
    ] = False,
) -> None:
    """Refuse a manifest that lets the host change what runs in the enclave."""
    text = read_bounded(manifest, "manifest", MAX_MANIFEST_FILE).decode("utf-8", "replace")
    lint_manifest(text)  # the rules first: a syntax error is named before any import runs
    out = Output()
    if unsafe_skip_imports:
        out.warn("the runtime's imports were not checked against the trusted files")
        out.out.print(f"OK {manifest}")
        return
    parsed = tomllib.loads(text)
    interpreter = parsed.get("libos", {}).get("entrypoint")
    python_path = parsed.get("loader", {}).get("env", {}).get("PYTHONPATH")
    if not isinstance(interpreter, str) or not isinstance(python_path, str):
        raise ManifestError(
            "gramine.syntax",
            "the manifest names no libos.entrypoint or loader.env.PYTHONPATH to import with",
        )
    modules = (*RUNTIME_MODULES, *(module or ()))
    imported = imported_files(
        Path(interpreter), [Path(p) for p in python_path.split(":") if p], modules
    )
    lint_manifest(text, imported=imported)
    out.out.print(f"OK {manifest} ({len(imported)} imported files, all trusted)")
