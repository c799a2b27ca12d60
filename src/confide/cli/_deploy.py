"""``confide deploy`` (the owner's) and ``confide verify`` (anyone's, no sign-in).

``deploy`` packages and encrypts the code with a fresh key, uploads it,
verifies the enclave against the fingerprint recomputed here, and only then
sends it the key (see :mod:`confide.client._deploy`). The scenario follows
the project file: zero trust (RA-TLS) by default; with ``[cloud.ssl]`` the
owner's certificate ("fully encrypted SaaS"); ``--untrusted-ssl`` lets the
operator terminate TLS (it can then read all traffic).

``verify`` fetches an app's RA-TLS certificate and checks its quote (and,
with ``--fingerprint`` or ``--context``, which code runs).

Exit codes: 0 done / verified; 1 verification failed (nothing was sent), the
app serves no RA-TLS, or the owner declined; 2 the command could not run.

Example::

    $ confide deploy --path confide.toml
    $ confide verify 0f0f...0001.apps.example.com --context .confide/0f0f...0001.json
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Final

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import INTEL_PCS_URL
from confide.client import (
    DEFAULT_RELEASE_VALIDITY,
    DEFAULT_TIMEOUT,
    AppContext,
    ChallengeClient,
    CheckpointStore,
    CollateralEvidence,
    CollateralSource,
    DeployOptions,
    EnclavePolicy,
    EnclaveVerifier,
    ProjectConfig,
    choose_tls,
    deploy,
    fetch_enclave_certificate,
    has_quote,
    release_summary,
    state_dir,
)
from confide.errors import PolicyError, UsageError
from confide.release import MAX_VALIDITY
from confide.runtime import CodeSource
from confide.wire import AppStatus, HostPort, TlsMode

from ._account import TokenOpt, UrlOpt, connect_operator, interactive
from ._app import EXIT_REJECTED, app, handle_errors
from ._keys import KeyFileOpt, owner_key_store
from ._output import Output
from ._tdx import TdReferenceOpt, load_td_reference
from ._verify_options import (
    CollateralOpt,
    JsonOpt,
    LogKeyOpt,
    OwnerOpt,
    PccsOpt,
    RootOpt,
    SimOpt,
    cache_dir,
    evidence_source,
    parse_hex,
    rejections,
    release_source,
)

_UNTRUSTED_WARNING: Final = (
    "--untrusted-ssl: the OPERATOR terminates TLS for this app and CAN READ ALL ITS TRAFFIC "
    "(requests, answers, user data). Only the code key still goes to the attested enclave. "
    "Users cannot verify such an app."
)

ConnectOpt = Annotated[
    str | None,
    typer.Option(
        "--connect",
        help="Reach the app at HOST:PORT (e.g. the router), sending its name as SNI.",
        envvar="CONFIDE_CONNECT",
    ),
]


def _pcs_collateral(pccs_url: str) -> CollateralSource:
    return CollateralEvidence.service(pccs_url, cache_dir() / "collateral").fetch


class _Events:
    """Deployment progress on stderr."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self._shown = -1

    def step(self, text: str) -> None:
        self.out.info(f"- {text}")

    def warn(self, text: str) -> None:
        self.out.warn(text)

    def upload(self, sent: int, total: int) -> None:
        tenth = 10 if total == 0 else sent * 10 // total
        if tenth != self._shown:
            self._shown = tenth
            self.out.info(f"  uploaded {sent} of {total} bytes ({tenth * 10}%)")

    def status(self, status: AppStatus, detail: str | None) -> None:
        self.out.info(f"  status: {status.value}" + (f" ({detail})" if detail else ""))


@app.command("deploy")
@handle_errors
def deploy_command(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Option("--path", help="The project file, or its folder (confide.toml or mse.toml)."),
    ] = Path("."),
    untrusted_ssl: Annotated[
        bool,
        typer.Option(
            "--untrusted-ssl",
            help="Let the operator terminate TLS: it can read all the app's traffic.",
        ),
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify", help="Do not attest the enclave before sending it the code key (unsafe)."
        ),
    ] = False,
    allow_simulation: SimOpt = False,
    td_reference: TdReferenceOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="Where the app context goes (default: .confide/)."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Minutes to wait for the app to start.", min=0.05, max=1440),
    ] = 10.0,
    connect: ConnectOpt = None,
    pccs_url: Annotated[
        str,
        typer.Option(
            "--pccs-url", help="Collateral from this PCCS or Intel PCS.", envvar="CONFIDE_PCCS_URL"
        ),
    ] = INTEL_PCS_URL,
    url: UrlOpt = None,
    token: TokenOpt = None,
    key_file: KeyFileOpt = None,
    release_version: Annotated[
        str | None,
        typer.Option("--release-version", help="A version label for the signed release."),
    ] = None,
    source_ref: Annotated[
        str | None,
        typer.Option("--source-ref", help="A source reference for the release (commit, URL)."),
    ] = None,
    release_days: Annotated[
        int,
        typer.Option(
            "--release-valid-days",
            help="Days the signed release statement is valid (users' checks fail after).",
            min=1,
            max=MAX_VALIDITY.days,
        ),
    ] = DEFAULT_RELEASE_VALIDITY.days,
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the deployed app as one JSON object on stdout (as `confide status "
            "--json`, with the fingerprint recomputed here and what was attested).",
        ),
    ] = False,
) -> None:
    """Deploy an app: encrypt, upload, attest the enclave, then hand it the code key."""
    out = Output(json_mode=json_)
    config = ProjectConfig.load(path)
    for warning in config.warnings:
        out.warn(warning)
    tls = choose_tls(config, untrusted_ssl=untrusted_ssl)
    scenario = {
        TlsMode.RATLS: "zero trust: the enclave serves RA-TLS, anyone can verify it",
        TlsMode.OWNER: "fully encrypted SaaS: the enclave serves your certificate",
        TlsMode.OPERATOR: "untrusted SSL: the operator serves its certificate",
    }[tls]
    out.info(f"deploying {config.name} ({scenario})")
    if tls == TlsMode.OPERATOR:
        out.warn(_UNTRUSTED_WARNING)
        if not yes:
            if not interactive(ctx):
                raise UsageError(
                    "--untrusted-ssl needs confirmation: give -y (stdin is no terminal)"
                )
            if not typer.confirm("Let the operator read all traffic?", default=False, err=True):
                out.info("nothing done")
                raise typer.Exit(EXIT_REJECTED)
    if no_verify:
        out.warn(
            "--no-verify: the enclave will NOT be attested (its code, TEE and key are not "
            "checked) before it receives the code key and secrets"
        )
    keys = owner_key_store(key_file)
    owner_key, created = keys.load_or_create()
    if created:
        out.info(
            f"created your owner key {owner_key.public_key.key_id} in {keys.path}: it signs "
            "your releases; give users its public key (`confide keys show`) and keep the file"
        )
    options = DeployOptions(
        owner_key=owner_key,
        release_version=release_version,
        release_source=source_ref,
        release_validity=timedelta(days=release_days),
        logs=CheckpointStore(state_dir(os.environ)),
        tls=tls,
        allow_simulation=allow_simulation,
        td_reference=load_td_reference(td_reference),
        unsafe_skip_attestation=no_verify,
        connect=HostPort.parse(connect, "--connect") if connect else None,
        wait=timeout * 60,
        timeout=DEFAULT_TIMEOUT,
        workspace=workspace,
        index_url=os.environ.get("PIP_INDEX_URL") or None,
    )
    with connect_operator(ctx, url, token, DEFAULT_TIMEOUT) as client:
        done = deploy(client, config, options, _Events(out), _pcs_collateral(pccs_url))
    record = done.record
    if json_:
        out.json(
            {
                **record.to_dict(),
                "fingerprint": done.fingerprint.hex(),
                "attested": done.verified is not None,
                "simulated": None if done.verified is None else done.verified.quote.simulated,
                "server_name": done.server_name,
                "connected_via": str(done.router),
                "context": str(done.context_path),
                "release": None
                if done.release is None
                else {
                    "owner_key_id": owner_key.public_key.key_id,
                    "log_index": done.release.index,
                    "checkpoint_size": done.release.checkpoint.size,
                },
            }
        )
        return
    out.fields(
        [
            ("id", str(record.id)),
            ("status", record.status.value),
            ("tls", record.tls.value),
            ("domains", ", ".join(record.domains)),
            ("router", str(done.router)),
            ("fingerprint", done.fingerprint.hex()),
            ("attested", "NO (--no-verify)" if done.verified is None else "yes"),
            ("context", str(done.context_path)),
        ]
    )
    if tls == TlsMode.RATLS:
        out.info(
            f"users verify it with: confide verify {done.server_name} --owner "
            f"{owner_key.public_key.to_text()} --operator {done.context.operator_url}"
        )


def _check_code(code: Path, app_context: AppContext, where: Path) -> None:
    """The folder's deterministic archive must be the one the owner deployed."""
    if app_context.code_sha256 is None:
        raise UsageError(
            f"{where} records no code digest (it was exported from the operator, which never "
            "sees the code): use the context file written by `confide deploy`"
        )
    digest = CodeSource.plaintext_folder(code).digest
    if digest != app_context.code_sha256:
        raise PolicyError(
            "code.digest",
            f"the code in {code} is not the code deployed",
            observed=digest.hex(),
            expected=app_context.code_sha256.hex(),
        )


@app.command("verify")
@handle_errors
def verify_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The app's domain name.", show_default=False)],
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="The expected fingerprint (hex).")
    ] = None,
    context: Annotated[
        Path | None,
        typer.Option("--context", help="The app context file (its fingerprint is expected)."),
    ] = None,
    code: Annotated[
        Path | None,
        typer.Option(
            "--code",
            help="With --context: check that this plaintext code folder is the code the owner "
            "deployed (its archive digest, recorded in the owner's context).",
        ),
    ] = None,
    allow_simulation: SimOpt = False,
    td_reference: TdReferenceOpt = None,
    operator: Annotated[
        str | None,
        typer.Option(
            "--operator",
            help="The operator's API URL: its release log (--owner), and its simulation root "
            "and collateral (simulated TEE).",
        ),
    ] = None,
    owner: OwnerOpt = None,
    log_key: LogKeyOpt = None,
    collateral: CollateralOpt = None,
    pccs_url: PccsOpt = None,
    root_ca: RootOpt = None,
    connect: ConnectOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Write the verified RA-TLS certificate (PEM) here."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds for each connection.", min=0.1, max=600)
    ] = DEFAULT_TIMEOUT,
    json_: JsonOpt = False,
) -> None:
    """Verify that DOMAIN is served by a genuine enclave (and with which code)."""
    out = Output(json_mode=json_)
    if fingerprint is not None and context is not None:
        raise UsageError("give at most one of --fingerprint and --context")
    expected = parse_hex(fingerprint, "--fingerprint", 32)
    if context is not None:
        app_context = AppContext.load(context)
        if domain not in app_context.domains:
            raise UsageError(
                f"{domain} is not a domain of the app in {context}: "
                f"{', '.join(app_context.domains)}"
            )
        expected = app_context.fingerprint
        if code is not None:
            _check_code(code, app_context, context)
    elif code is not None:
        raise UsageError("--code needs --context: the owner's context records the code's digest")
    if collateral is not None and pccs_url is not None:
        raise UsageError("give at most one of --collateral FILE and --pccs-url URL")
    address = HostPort.parse(connect, "--connect") if connect else HostPort(domain, 443)
    owner_key, releases = release_source(owner, operator, log_key, timeout=timeout)
    verifier = EnclaveVerifier(
        evidence_source(
            collateral,
            pccs_url,
            root_ca,
            operator=operator,
            default_pccs=INTEL_PCS_URL,
            timeout=timeout,
        ),
        EnclavePolicy(
            expected,
            domain,
            owner=owner_key,
            allow_any_code=expected is None and owner_key is None,
            allow_simulation=allow_simulation,
            mismatch_hint="nothing was sent; the operator runs other code than yours",
            td_reference=load_td_reference(td_reference),
        ),
        releases=releases,
        # A new quote for a nonce, on a connection pinned to the certificate (ADR 0021).
        fresh=ChallengeClient(address, domain, timeout=timeout),
    )
    cert = fetch_enclave_certificate(address, domain, timeout=timeout)
    with rejections(out, cert):
        if not has_quote(cert):
            raise PolicyError(
                "ratls.absent",
                f"{domain} does not serve RA-TLS: its certificate carries no quote (it is the "
                "owner's or the operator's), so an app user cannot verify what runs there",
                hint="ask the owner for a zero-trust (RA-TLS) deployment",
            )
        verified = verifier.verify(cert)
    if output is not None:
        try:
            output.write_bytes(cert.public_bytes(Encoding.PEM))
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    release = verified.release
    if json_:
        summary: dict[str, object] = verified.quote.to_dict()
        if release is not None:
            summary["release"] = release_summary(release)
        if verified.fresh is not None:
            summary["fresh"] = {
                "nonce": verified.fresh.nonce.hex(),
                "report_data": verified.fresh.quote.report_data.hex(),
            }
        out.json(summary)
    else:
        out.verification(verified.quote)
    if release is not None:
        if not json_:
            out.info(
                f"{domain} runs a release of owner {release.owner.key_id}"
                + (f", version {release.release.version}" if release.release.version else "")
                + f" (fingerprint {release.fingerprint.hex()}, log index {release.log_index}, "
                f"valid until {release.release.not_after.isoformat()})"
            )
    elif expected is None:
        out.warn(
            f"no --fingerprint or --context: the enclave is genuine and was launched for "
            f"{domain}, but WHICH CODE runs was not checked; compare its MRENCLAVE with the "
            "fingerprint the owner publishes"
        )
    elif not json_:
        out.info(f"{domain} runs the code of fingerprint {expected.hex()}")
    if output is not None:
        out.info(f"wrote the verified certificate to {output}")
