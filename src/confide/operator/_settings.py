"""The operator's settings: one frozen object, built once at the entry point.

:meth:`OperatorSettings.load` is the only place that reads the operator's
TOML configuration file; nothing below it reads files or environment
variables for configuration. Command-line options (and their environment
variables, read by the CLI) override the file, which overrides the defaults.

Configuration file (every key optional)::

    database_url = "postgresql+psycopg://confide@db.internal/confide"
    api_host = "127.0.0.1"
    api_port = 8080
    wheel_index_url = "https://pypi.internal/simple"   # optional: where apps' locked wheels
                                        # are fetched (default: pip's, PyPI; ADR 0024)
    wheel_find_links = "/srv/wheels"    # optional: a folder of wheels, for no internet at all
    base_domain = "confide.example.com"
    router_host = "127.0.0.1"
    router_port = 8443
    tee = "simulation"                  # or "gramine", "simulation-tdx", "tdx"
    allow_simulated_gramine = false     # tests only: see below
    allow_simulated_tdx = false         # tests only: see below
    max_package_size = 268435456        # bytes
    max_apps_per_account = 20
    runtime_nice = 10                   # how much lower runtimes' CPU priority is (0-19;
                                        # process backend; ADR 0029)
    runtime_fork = true                 # fork runtimes from one pre-imported parent
                                        # (process backend; ADR 0031)
    supervisor = "always"               # or "lease" / "never": replicas (ADR 0023)
    console_https = false               # true: browsers reach the API over https through
                                        # a TLS front end (the console's cookies: ADR 0025)

    [kubernetes]                        # optional: run apps as pods (ADR 0007)
    namespace = "confide-apps"
    image = "registry.example/confide-runtime@sha256:..."
    operator_id = "operator-1"
    blob_url = "http://confide-operator.confide:8080/api/v1/blobs"
    simulation_claim = "confide-simulation"   # simulated TEEs only
    lease = "confide-supervisor"        # the Lease that elects the supervisor

    [tdx]                               # with tee = "tdx": one TD per app (ADR 0022)
    firmware = "/usr/share/ovmf/OVMF.inteltdx.fd"   # TDVF, QEMU's -bios
    kernel = "/var/lib/confide/guest/vmlinuz"       # the Confide guest image
    initrd = "/var/lib/confide/guest/initrd.img"
    append = "console=ttyS0 quiet"                  # its kernel command line
    reference = "/var/lib/confide/guest/reference.json"  # its MRTD and RTMR0-2, published
    qemu = "qemu-system-x86_64"                     # looked up on PATH

    [plans.small]                       # replaces the default plan set when present
    memory_mib = 512
    cores = 1
    max_lifetime_days = 365             # optional: the latest expires_at an app may ask for
    configure_timeout_minutes = 30      # optional: an app not configured by then is stopped

Example::

    >>> from pathlib import Path
    >>> settings = OperatorSettings.load(Path("/var/lib/confide"), runtime_sha256=bytes(32))
    >>> settings.database_url
    'sqlite:////var/lib/confide/operator.db'
    >>> settings.plan("small").memory_mib
    512
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from confide.errors import UsageError
from confide.wire import DNS_LABEL
from confide.wire.api import Plan

#: The configuration file looked for in the data folder when none is given.
CONFIG_FILE_NAME: Final = "operator.toml"
#: Largest configuration file read.
MAX_CONFIG_FILE: Final = 1024 * 1024
#: Default limits.
DEFAULT_MAX_PACKAGE_SIZE: Final = 256 * 1024 * 1024
DEFAULT_MAX_APPS_PER_ACCOUNT: Final = 20
#: How much lower than the operator's a local runtime's CPU priority is (a nice increment,
#: on the process and its session's autogroup; ADR 0029): the API, the router and the
#: supervisor answer first while runtimes start. 0: the operator's priority.
DEFAULT_RUNTIME_NICE: Final = 10
#: The largest nice increment (nice values go from -20 to 19).
MAX_RUNTIME_NICE: Final = 19
#: Bounds the configuration may not leave.
MAX_PLANS: Final = 64
_HOSTNAME: Final = re.compile(rf"^(?=.{{1,200}}$){DNS_LABEL}(?:\.{DNS_LABEL})*$")


class TeeBackend(enum.StrEnum):
    """Which TEE the operator's backend launches apps in."""

    #: No hardware: simulated quotes that verify only against the operator's simulation root.
    SIMULATION = "simulation"
    #: Intel SGX through Gramine.
    GRAMINE = "gramine"
    #: Intel TDX: one TD per app, launched with QEMU from the Confide guest image (ADR 0022).
    TDX = "tdx"
    #: No hardware: one simulated TD per app (ADR 0020), its quotes TDX quotes that verify
    #: only against the operator's simulation root.
    SIMULATION_TDX = "simulation-tdx"

    @property
    def simulated(self) -> bool:
        """Whether apps run on the operator's simulated platform."""
        return self in (TeeBackend.SIMULATION, TeeBackend.SIMULATION_TDX)


class SupervisorMode(enum.StrEnum):
    """Whether this operator process runs the supervisor (replicas: ADR 0023)."""

    #: The only operator: it supervises, and its router routes what its supervisor runs.
    ALWAYS = "always"
    #: One of several replicas: it supervises only while it holds the ``[kubernetes]``
    #: ``lease``; its router routes from the shared database.
    LEASE = "lease"
    #: An API and router replica: it never supervises; its router routes from the database,
    #: so it must reach the runtimes' addresses (pod IPs; 127.0.0.1 only on the same host).
    NEVER = "never"

    @property
    def routes_from_database(self) -> bool:
        """Whether the router reads routes from the database (else from the supervisor)."""
        return self is not SupervisorMode.ALWAYS


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """Where the Kubernetes backend runs pods (the ``[kubernetes]`` table; ADR 0007)."""

    namespace: str
    #: The runtime image, by digest in production.
    image: str
    #: This operator's name on its objects (the ``confide.dev/operator`` label).
    operator_id: str
    #: Where pods fetch packages by SHA-256: this operator's ``/api/v1/blobs``.
    blob_url: str
    simulation_claim: str | None = None
    state_size: str = "1Gi"
    storage_class: str | None = None
    #: The Lease (in ``namespace``) the replicas elect the supervisor with (ADR 0023).
    lease: str | None = None

    def __post_init__(self) -> None:
        if not _K8S_NAME.match(self.namespace) or not _K8S_NAME.match(self.operator_id):
            raise UsageError("kubernetes namespace and operator_id must be DNS labels")
        if self.lease is not None and not _K8S_NAME.match(self.lease):
            raise UsageError(f"kubernetes lease must be a DNS label, got {self.lease!r}")
        if not self.blob_url.startswith(("http://", "https://")):
            raise UsageError(f"kubernetes blob_url must be an http(s) URL, got {self.blob_url!r}")


@dataclass(frozen=True, slots=True)
class TdxSettings:
    """How the TDX backend launches each app's TD (the ``[tdx]`` table; ADR 0022)."""

    #: TDVF (QEMU's ``-bios``), e.g. ``OVMF.inteltdx.fd``: measured into MRTD.
    firmware: Path
    #: The Confide guest image's kernel and initrd (``-kernel``, ``-initrd``): RTMR1-2.
    kernel: Path
    initrd: Path
    #: The reference values file of that image (MRTD, RTMR0-2) the operator publishes.
    reference: Path
    #: The guest kernel's command line (``-append``): measured into RTMR2.
    append: str = "console=ttyS0"
    #: QEMU, looked up on PATH unless a path.
    qemu: str = "qemu-system-x86_64"

    def __post_init__(self) -> None:
        for name in ("firmware", "kernel", "initrd", "reference"):
            object.__setattr__(self, name, Path(getattr(self, name)))
            if not getattr(self, name).is_absolute():
                raise UsageError(f"[tdx] {name} must be an absolute path")
        if not 0 < len(self.append) <= 2048 or any(c in self.append for c in "\0\n"):
            raise UsageError("[tdx] append must be one line of at most 2048 characters")


_TDX_KEYS: Final = frozenset({"firmware", "kernel", "initrd", "reference", "append", "qemu"})


_K8S_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_K8S_KEYS: Final = frozenset(
    {
        "namespace",
        "image",
        "operator_id",
        "blob_url",
        "simulation_claim",
        "state_size",
        "storage_class",
        "lease",
    }
)


DEFAULT_PLANS: Final = (
    Plan("small", memory_mib=512, cores=1),
    Plan("medium", memory_mib=2048, cores=2),
    Plan("large", memory_mib=8192, cores=4),
)


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """The operator's data folder when none is given: ``$XDG_DATA_HOME/confide/operator``,
    else ``~/.local/share/confide/operator`` (a relative ``XDG_DATA_HOME`` is ignored, as
    the XDG base directory specification says)."""
    base = environ.get("XDG_DATA_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "confide" / "operator"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "share" / "confide" / "operator"


def _default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'operator.db'}"


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """Everything the operator service was told; nothing else reads its configuration."""

    #: Where the database (SQLite default), blobs and runtime logs live. Absolute.
    data_dir: Path
    #: SQLAlchemy URL: ``sqlite:///...`` or ``postgresql+psycopg://...``.
    database_url: str
    #: SHA-256 of the Confide runtime the backend launches (part of every fingerprint).
    runtime_sha256: bytes
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: Apps are served at ``<app-id>.<base_domain>``.
    base_domain: str = "confide.localhost"
    #: Where the router (the operator's TLS front) listens.
    router_host: str = "127.0.0.1"
    router_port: int = 8443
    #: The package index apps' locked wheels are fetched from (ADR 0024); ``None``: pip's
    #: default (PyPI). Not trusted: the runtime checks every wheel against the lock.
    wheel_index_url: str | None = None
    #: A local folder of wheels to fetch from instead of any index (no internet).
    wheel_find_links: str | None = None
    plans: tuple[Plan, ...] = DEFAULT_PLANS
    #: Largest encrypted package accepted, in bytes (a larger upload gets 413).
    max_package_size: int = DEFAULT_MAX_PACKAGE_SIZE
    #: Most apps (not deleted) one account may have (one more gets 409).
    max_apps_per_account: int = DEFAULT_MAX_APPS_PER_ACCOUNT
    #: How much lower local runtimes' CPU priority is (:data:`DEFAULT_RUNTIME_NICE`).
    runtime_nice: int = DEFAULT_RUNTIME_NICE
    #: Fork local runtimes from one pre-imported parent instead of starting each afresh
    #: (the simulated process backend only; ADR 0031).
    runtime_fork: bool = True
    tee: TeeBackend = TeeBackend.SIMULATION
    #: Tests only: the ``gramine-*`` executables on PATH are the stand-ins of
    #: ``tests/gramine_standin``, whose quotes come from the simulated platform in
    #: ``<data>/simulation``; its root and collateral are published at ``/simulation``
    #: as in simulation mode (clients accept them only with ``--allow-simulation``).
    allow_simulated_gramine: bool = False
    #: Tests only: ``qemu-system-x86_64`` on PATH is the stand-in of ``tests/tdx_standin``,
    #: whose TD quotes come from the simulated platform in ``<data>/simulation`` (published
    #: at ``/simulation`` as in simulation mode).
    allow_simulated_tdx: bool = False
    #: With ``tee = "tdx"``: how each app's TD is launched.
    tdx: TdxSettings | None = None
    #: Run apps as pods (ADR 0007); ``None``: as processes of this host.
    kubernetes: KubernetesSettings | None = None
    #: Whether this process supervises (always, while it holds the Lease, never).
    supervisor: SupervisorMode = SupervisorMode.ALWAYS
    #: Browsers reach the API (and its console) over https through a TLS front end: the API
    #: listens in plain HTTP, so only this tells the console to name its cookies ``__Host-``
    #: and make them Secure (ADR 0025, review).
    console_https: bool = False
    _plan_index: Mapping[str, Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.data_dir.is_absolute():
            raise UsageError(f"the data folder must be an absolute path, got {self.data_dir}")
        if not isinstance(self.runtime_sha256, bytes) or len(self.runtime_sha256) != 32:
            raise UsageError("runtime_sha256 must be 32 bytes")
        try:
            url = make_url(self.database_url)
        except ArgumentError as exc:
            raise UsageError(f"the database URL is not valid: {exc}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise UsageError(
                f"database backend {url.get_backend_name()!r} is not supported",
                hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            )
        for name, port in (("api_port", self.api_port), ("router_port", self.router_port)):
            if not 0 <= port <= 65535:
                raise UsageError(f"{name} must be in 0..65535, got {port}")
        if not _HOSTNAME.match(self.base_domain):
            raise UsageError(f"base_domain {self.base_domain!r} is not a lower-case DNS name")
        if not 0 < len(self.plans) <= MAX_PLANS:
            raise UsageError(f"give 1 to {MAX_PLANS} plans, got {len(self.plans)}")
        index = {p.name: p for p in self.plans}
        if len(index) != len(self.plans):
            raise UsageError("plan names must be unique")
        if self.max_package_size <= 0:
            raise UsageError(f"max_package_size must be positive, got {self.max_package_size}")
        if self.max_apps_per_account <= 0:
            raise UsageError(
                f"max_apps_per_account must be positive, got {self.max_apps_per_account}"
            )
        if not 0 <= self.runtime_nice <= MAX_RUNTIME_NICE:
            raise UsageError(
                f"runtime_nice must be in 0..{MAX_RUNTIME_NICE}, got {self.runtime_nice}"
            )
        object.__setattr__(self, "tee", TeeBackend(self.tee))
        if self.allow_simulated_gramine and self.tee != TeeBackend.GRAMINE:
            raise UsageError('allow_simulated_gramine needs tee = "gramine"')
        object.__setattr__(self, "supervisor", SupervisorMode(self.supervisor))
        if self.supervisor.routes_from_database and url.get_backend_name() != "postgresql":
            raise UsageError(
                f'supervisor = "{self.supervisor.value}" is for replicas sharing one database',
                hint="give a postgresql+psycopg:// database_url",
            )
        if self.supervisor is SupervisorMode.LEASE and (
            self.kubernetes is None or self.kubernetes.lease is None
        ):
            raise UsageError('supervisor = "lease" needs a [kubernetes] lease name')
        if self.allow_simulated_tdx and self.tee != TeeBackend.TDX:
            raise UsageError('allow_simulated_tdx needs tee = "tdx"')
        if (self.tee == TeeBackend.TDX) != (self.tdx is not None):
            raise UsageError(
                'tee = "tdx" needs a [tdx] table, and a [tdx] table needs tee = "tdx"',
                hint="[tdx] names the firmware, the guest image and its reference values",
            )
        object.__setattr__(self, "_plan_index", index)

    # -- derived -----------------------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        """Whether quotes come from the simulated platform in ``<data>/simulation``."""
        return self.tee.simulated or self.allow_simulated_gramine or self.allow_simulated_tdx

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def wheels_dir(self) -> Path:
        """The wheel cache and the apps' requirement locks (ADR 0024)."""
        return self.data_dir / "wheels"

    @property
    def logs_dir(self) -> Path:
        """Where the backend writes each app's runtime output (``<app-id>.log``)."""
        return self.data_dir / "logs"

    @property
    def router_address(self) -> str:
        return f"{self.router_host}:{self.router_port}"

    def plan(self, name: str) -> Plan:
        """The plan called ``name``; :class:`UsageError` if there is none."""
        try:
            return self._plan_index[name]
        except KeyError:
            raise UsageError(
                f"no plan {name!r}", hint=f"plans: {', '.join(sorted(self._plan_index))}"
            ) from None

    def has_plan(self, name: str) -> bool:
        return name in self._plan_index

    def database_url_for_display(self) -> str:
        """The database URL with any password hidden."""
        return make_url(self.database_url).render_as_string(hide_password=True)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        data_dir: Path,
        *,
        runtime_sha256: bytes,
        config_file: Path | None = None,
        **overrides: Any,
    ) -> OperatorSettings:
        """Build the settings: defaults, then ``config_file``, then ``overrides``.

        ``config_file`` defaults to ``<data_dir>/operator.toml`` when that file
        exists. ``overrides`` are field names with values (``None`` values are
        ignored, so a CLI can pass its options straight through).
        """
        data_dir = data_dir.expanduser().resolve()
        if config_file is None and (data_dir / CONFIG_FILE_NAME).is_file():
            config_file = data_dir / CONFIG_FILE_NAME
        values: dict[str, Any] = _read_config(config_file) if config_file is not None else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - _FILE_KEYS
        if unknown:
            raise UsageError(f"unknown operator settings: {', '.join(sorted(unknown))}")
        if "supervisor" in values:
            try:
                values["supervisor"] = SupervisorMode(values["supervisor"])
            except ValueError:
                raise UsageError(
                    f"supervisor must be one of {', '.join(m.value for m in SupervisorMode)}, "
                    f"got {values['supervisor']!r}"
                ) from None
        if "tee" in values:
            try:
                values["tee"] = TeeBackend(values["tee"])
            except ValueError:
                raise UsageError(
                    f"tee must be one of {', '.join(t.value for t in TeeBackend)}, "
                    f"got {values['tee']!r}"
                ) from None
        values.setdefault("database_url", _default_database_url(data_dir))
        return cls(data_dir=data_dir, runtime_sha256=runtime_sha256, **values)

    def with_overrides(self, **changes: Any) -> OperatorSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


_FILE_KEYS: Final = frozenset(
    {
        "database_url",
        "api_host",
        "api_port",
        "base_domain",
        "router_host",
        "router_port",
        "wheel_index_url",
        "wheel_find_links",
        "plans",
        "max_package_size",
        "max_apps_per_account",
        "runtime_nice",
        "tee",
        "allow_simulated_gramine",
        "allow_simulated_tdx",
        "kubernetes",
        "supervisor",
        "tdx",
        "console_https",
        "runtime_fork",
    }
)
_INT_KEYS: Final = frozenset(
    {"api_port", "router_port", "max_package_size", "max_apps_per_account", "runtime_nice"}
)
_STR_KEYS: Final = frozenset(
    {"database_url", "api_host", "base_domain", "router_host", "tee", "supervisor"}
)


#: Where apps' locked wheels come from (strings; ADR 0024).
_WHEEL_KEYS: Final = frozenset({"wheel_index_url", "wheel_find_links"})


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_FILE + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read the operator configuration {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_CONFIG_FILE:
        raise UsageError(f"the operator configuration {path} is larger than {MAX_CONFIG_FILE}")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"the operator configuration {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "plans":
            values["plans"] = _plans(value, path)
        elif key in _INT_KEYS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{path}: {key} must be an integer, got {value!r}")
            values[key] = value
        elif key in _STR_KEYS or key in _WHEEL_KEYS:
            if not isinstance(value, str):
                raise UsageError(f"{path}: {key} must be a string, got {value!r}")
            values[key] = value
        elif key == "kubernetes":
            if not isinstance(value, dict) or not set(value) <= _K8S_KEYS:
                raise UsageError(f"{path}: [kubernetes] keys are {', '.join(sorted(_K8S_KEYS))}")
            if not all(isinstance(v, str) for v in value.values()):
                raise UsageError(f"{path}: [kubernetes] values must be strings")
            try:
                values[key] = KubernetesSettings(**value)
            except TypeError:
                raise UsageError(
                    f"{path}: [kubernetes] needs namespace, image, operator_id and blob_url"
                ) from None
        elif key == "tdx":
            if not isinstance(value, dict) or not set(value) <= _TDX_KEYS:
                raise UsageError(f"{path}: [tdx] keys are {', '.join(sorted(_TDX_KEYS))}")
            if not all(isinstance(v, str) for v in value.values()):
                raise UsageError(f"{path}: [tdx] values must be strings")
            try:
                values[key] = TdxSettings(**value)
            except TypeError:
                raise UsageError(
                    f"{path}: [tdx] needs firmware, kernel, initrd and reference"
                ) from None
        elif key in (
            "allow_simulated_gramine",
            "allow_simulated_tdx",
            "console_https",
            "runtime_fork",
        ):
            if not isinstance(value, bool):
                raise UsageError(f"{path}: {key} must be true or false, got {value!r}")
            values[key] = value
        else:
            raise UsageError(
                f"{path}: unknown key {key!r}", hint=f"known keys: {', '.join(sorted(_FILE_KEYS))}"
            )
    return values


def _plans(value: object, path: Path) -> tuple[Plan, ...]:
    if not isinstance(value, dict) or not value:
        raise UsageError(f"{path}: [plans] must be a table of plan tables, e.g. [plans.small]")
    plans = []
    for name, spec in value.items():
        if not isinstance(spec, dict) or not _PLAN_REQUIRED <= set(spec) <= _PLAN_KEYS:
            raise UsageError(
                f"{path}: [plans.{name}] must have memory_mib and cores, and may have "
                "max_lifetime_days and configure_timeout_minutes"
            )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in spec.values()):
            raise UsageError(f"{path}: [plans.{name}] {', '.join(spec)} must be integers")
        plans.append(Plan(name, **spec))
    return tuple(plans)


_PLAN_REQUIRED: Final = frozenset({"memory_mib", "cores"})
_PLAN_KEYS: Final = _PLAN_REQUIRED | {"max_lifetime_days", "configure_timeout_minutes"}
