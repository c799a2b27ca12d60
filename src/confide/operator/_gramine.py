"""The operator's Gramine backend: each app's runtime in an SGX enclave, through ``gramine-sgx``.

:class:`GramineBackend` launches the same ``confide runtime`` as
:class:`~._backend.LocalProcessBackend`, with the same statuses, logs, restarts
and adoption, but as Gramine runs an enclave (ADR 0018). For each start, in the
app's folder ``<data>/apps/<id>/``:

1. ``package`` (a link to the stored blob), ``state/`` and, in certificate mode,
   ``certificate.pem`` are put where the manifest names them (relative paths, so
   an owner predicts the same manifest without knowing the operator's layout);
2. :func:`confide.runtime.check_launch` refuses a launch that would not measure as
   the stored launch manifest;
3. :func:`confide.gramine.app_manifest` renders ``confide-runtime.manifest`` (the
   runtime's fixed argv and environment, every trusted file with its hash, the
   plan's memory as the enclave size, :data:`THREADS_PER_CORE` threads per core):
   the manifest ``confide fingerprint --tee gramine`` predicts from the same inputs;
4. ``gramine-sgx-sign --manifest confide-runtime.manifest --output
   confide-runtime.manifest.sgx --key <data>/gramine/enclave-key.pem`` expands it
   and writes ``confide-runtime.sig`` (the SIGSTRUCT, whose MRENCLAVE is what the
   app's users verify);
5. ``gramine-sgx <data>/apps/<id>/confide-runtime`` runs it, in its own session,
   with the backend's fixed environment plus the listening address and port in the
   two variables the manifest passes through (:data:`~confide.gramine.PASSTHROUGH_ENV`),
   its output appended to the app's log.

What the backend trusts: nothing it writes here is trusted by anyone else. The
manifest, its hashes and the signature only decide what the enclave measures to;
a host that changes any of them changes MRENCLAVE, which the owner checks before
sending a key and users check before sending anything. The backend needs the
signing key only so that Gramine can launch (SGX requires a SIGSTRUCT): MRSIGNER is
the operator's, and nobody's policy relies on it.

The router relays the bytes of every connection to the enclave's port on loopback:
no descriptor is handed into an enclave (ADR 0009). The enclave's address and port
are not in its measured argv: Gramine passes them in from this backend's
environment (ADR 0011: harmless), so the measurement does not depend on them. The
port is kept in ``runtime.json`` with the pid (a restart reuses it) and an operator
restart adopts the enclave from it, after checking that the pid's command line is
``gramine-sgx``'s for this app.

The decrypted code is on the enclave's own ``tmpfs``: nothing is left on the host
when an enclave ends, so this backend has no code folders to remove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from confide.errors import UsageError
from confide.gramine import (
    APP_REQUIREMENTS,
    APP_WHEELS,
    HOST_VARIABLE,
    PORT_VARIABLE,
    app_manifest,
    runtime_environment,
)
from confide.runtime import check_launch
from confide.wire import RequirementsLock, TlsMode

from ._backend import (
    LOCAL_RUNTIME_ENVIRONMENT,
    STOP_TIMEOUT,
    AppSpec,
    Launch,
    LaunchRefused,
    RecordedProcessBackend,
    read_cmdline,
)
from ._logs import LogSource
from ._seams import Clock, utc_now
from ._settings import TeeBackend

#: The executables this backend runs (found on the operator's PATH).
GRAMINE_SIGN: Final = "gramine-sgx-sign"
GRAMINE_SGX: Final = "gramine-sgx"
#: The app's manifest is ``<stem>.manifest``; Gramine runs ``<app folder>/<stem>``.
MANIFEST_STEM: Final = "confide-runtime"
#: Enclave threads per core of the plan (SGX needs the count up front; Gramine itself
#: uses a few: its docs ask for at least 4).
THREADS_PER_CORE: Final = 32
#: Longest a signing may take (it hashes every trusted file once).
SIGN_TIMEOUT: Final = 600.0
#: SGX's signing key: RSA-3072 with public exponent 3 (Intel SDM, SIGSTRUCT).
_KEY_SIZE: Final = 3072
_EXPONENT: Final = 3


def plan_enclave(memory_mib: int, cores: int) -> tuple[str, int]:
    """``sgx.enclave_size`` and ``sgx.max_threads`` of a plan's enclave: what this backend
    renders and what the API tells owners (``AppRecord.gramine``), from one place."""
    return f"{memory_mib}M", THREADS_PER_CORE * cores


class GramineBackend(RecordedProcessBackend):
    """Each app's runtime in a Gramine SGX enclave (see the module's description)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        log_source: LogSource,
        host: str = "127.0.0.1",
        search_path: str | None = None,
        environment: Mapping[str, str] = LOCAL_RUNTIME_ENVIRONMENT,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Clock = utc_now,
        wheel_index_url: str | None = None,
        wheel_find_links: str | None = None,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            log_source=log_source,
            tee=TeeBackend.GRAMINE,
            host=host,
            environment=environment,
            stop_timeout=stop_timeout,
            clock=clock,
            wheel_index_url=wheel_index_url,
            wheel_find_links=wheel_find_links,
        )
        #: Where ``gramine-sgx`` and ``gramine-sgx-sign`` are looked for (the operator's PATH).
        self._search_path = search_path
        self.gramine_dir = data_dir / "gramine"
        self.key_path = self.gramine_dir / "enclave-key.pem"

    # -- folders -------------------------------------------------------------------------------

    def app_base(self, app_id: uuid.UUID) -> Path:
        """What ``gramine-sgx`` is given: the manifest's path without ``.manifest``."""
        return self.app_dir(app_id) / MANIFEST_STEM

    def remove_code(self, app_id: uuid.UUID | None = None) -> list[Path]:
        return []  # the code is on the enclave's own tmpfs: nothing is left on the host

    # -- starting ------------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        found = shutil.which(name, path=self._search_path)
        if found is None:
            raise LaunchRefused(
                f"{name} is not installed on this host (looked on PATH)",
                hint='install Gramine (see docs/hardware.md), or set tee = "simulation"',
            )
        return found

    def signing_key(self) -> Path:
        """The operator's enclave signing key, made on first use (0600, never overwritten)."""
        if not self.key_path.exists():
            self.gramine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=_EXPONENT, key_size=_KEY_SIZE)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return self.key_path  # another start made it meanwhile
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        return self.key_path

    def _link_package(self, spec: AppSpec) -> None:
        link = self.app_dir(spec.app_id) / "package"
        tmp = link.with_name(".package.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(spec.package.resolve())
        os.replace(tmp, link)

    def _prepare(self, spec: AppSpec, now: datetime) -> Launch:
        sign, sgx = self._tool(GRAMINE_SIGN), self._tool(GRAMINE_SGX)
        folder = self.app_dir(spec.app_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        certificate = self._write_certificate(spec)
        if not spec.package.is_file():
            raise LaunchRefused(f"the package of app {spec.app_id} is missing: {spec.package}")
        state = self.state_dir(spec.app_id)
        state.mkdir(mode=0o700, exist_ok=True)
        lock = self._place_requirements(spec)
        self._check(spec, certificate, state, now)
        self._link_package(spec)
        try:
            environment = runtime_environment(cache_dir=self.gramine_dir / "hash-cache")
            # The manifest ``confide fingerprint --tee gramine`` predicts from the same
            # inputs: the package, state and certificate at their places in this folder.
            enclave_size, max_threads = plan_enclave(spec.memory_mib, spec.cores)
            text = app_manifest(
                spec.manifest,
                environment,
                enclave_size=enclave_size,
                max_threads=max_threads,
                lock=lock,
            )
        except LaunchRefused:
            raise
        except UsageError as exc:
            raise LaunchRefused(exc.message, hint=exc.hint) from None
        base = self.app_base(spec.app_id)
        manifest = base.with_name(base.name + ".manifest")
        tmp = manifest.with_name(f".{manifest.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, manifest)
        self._sign(sign, spec.app_id, manifest, base.with_name(base.name + ".manifest.sgx"))
        port = self._port(spec.app_id)
        # The only variables the manifest lets in from the host (loader.env passthrough).
        passed = {**self._environment, HOST_VARIABLE: self._host, PORT_VARIABLE: str(port)}
        return Launch([sgx, str(base)], passed, port)

    def _write_certificate(self, spec: AppSpec) -> Path | None:
        if spec.manifest.tls != TlsMode.OWNER:
            return None
        if spec.certificate_pem is None:
            raise LaunchRefused(f"app {spec.app_id} has no owner certificate stored")
        certificate = self.certificate_path(spec.app_id)
        tmp = certificate.with_suffix(".tmp")
        tmp.write_text(spec.certificate_pem, encoding="utf-8")
        os.replace(tmp, certificate)
        return certificate

    def _place_requirements(self, spec: AppSpec) -> RequirementsLock | None:
        """The app's lock and its wheels, fetched into the cache, put in the app's folder
        where its manifest names them (``requirements.lock``, ``wheels/<ab>/<cdef...>``):
        hard links to the cache (copies across file systems). Not a defence: Gramine and
        the runtime check each against the measured lock (ADR 0024)."""
        if self.prepare_requirements(spec) is None or spec.manifest.requirements_sha256 is None:
            return None
        lock = self.wheels.read_lock(spec.manifest.requirements_sha256)
        folder = self.app_dir(spec.app_id)
        wheels = folder / APP_WHEELS
        fresh = folder / f".{APP_WHEELS}.tmp"
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            for r in lock.requirements:
                source = self.wheels.wheel_path(r.sha256)
                target = fresh / source.parent.name / source.name
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            shutil.rmtree(wheels, ignore_errors=True)
            os.replace(fresh, wheels)
            tmp = folder / f".{APP_REQUIREMENTS}.tmp"
            tmp.write_bytes(lock.to_bytes())
            os.replace(tmp, folder / APP_REQUIREMENTS)
        except OSError as exc:
            raise LaunchRefused(
                f"cannot place the wheels of app {spec.app_id}: {exc.strerror or exc}"
            ) from None
        return lock

    def _check(self, spec: AppSpec, certificate: Path | None, state: Path, now: datetime) -> None:
        requirements = wheels = None
        if spec.manifest.requirements_sha256 is not None:
            requirements = self.app_dir(spec.app_id) / APP_REQUIREMENTS
            wheels = self.app_dir(spec.app_id) / APP_WHEELS
        try:
            check_launch(
                spec.manifest,
                package=spec.package,
                certificate=certificate,
                state_dir=state,
                now=now,
                requirements=requirements,
                wheels=wheels,
            )
        except UsageError as exc:
            raise LaunchRefused(exc.message, hint=exc.hint) from None

    def _sign(self, tool: str, app_id: uuid.UUID, manifest: Path, output: Path) -> None:
        argv = [tool, "--manifest", str(manifest), "--output", str(output)]
        argv += ["--key", str(self.signing_key())]
        try:
            done = subprocess.run(  # noqa: S603 - Gramine's signer, no shell
                argv,
                cwd=manifest.parent,
                capture_output=True,
                timeout=SIGN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LaunchRefused(f"{GRAMINE_SIGN} took over {SIGN_TIMEOUT:g} s") from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
            raise LaunchRefused(
                f"{GRAMINE_SIGN} refused the manifest of app {app_id} "
                f"(exit {done.returncode}): {said[-1][:500]}"
            )

    # -- finding it again ----------------------------------------------------------------------

    def _ours(self, pid: int, app_id: uuid.UUID) -> list[str] | None:
        """The command line of ``pid`` if it is ``gramine-sgx`` running this app's manifest."""
        argv = read_cmdline(pid)
        if argv is None or str(self.app_base(app_id)) not in argv:
            return None
        return argv

    def _app_of(self, argv: list[str]) -> uuid.UUID | None:
        for element in argv:
            path = Path(element)
            if path.name == MANIFEST_STEM and path.parent.parent == self.apps_dir:
                try:
                    return uuid.UUID(path.parent.name)
                except ValueError:
                    return None
        return None
