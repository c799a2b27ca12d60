"""The bodies (see :mod:`confide.wire.api`)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    model_validator,
)

from confide.errors import JsonError, UsageError, WireError
from confide.strictjson import loads
from confide.wire import (
    APPLICATION_LENGTH,
    APPLICATION_PATTERN,
    DOMAIN_LENGTH,
    DOMAIN_PATTERN,
    HEALTHCHECK_LENGTH,
    HEALTHCHECK_PATTERN,
    NAME_LENGTH,
    NAME_PATTERN,
    AppStatus,
    DesiredState,
    HostPort,
    LaunchManifest,
    TlsMode,
)

__all__ = [
    "DEFAULT_CONFIGURE_TIMEOUT_MINUTES",
    "DEFAULT_MAX_LIFETIME_DAYS",
    "MAX_CERTIFICATE_PEM",
    "MAX_PLAN_CONFIGURE_TIMEOUT_MINUTES",
    "MAX_PLAN_CORES",
    "MAX_PLAN_LIFETIME_DAYS",
    "MAX_PLAN_MEMORY_MIB",
    "Account",
    "AppList",
    "AppRecord",
    "DeployManifest",
    "ManifestIn",
    "Health",
    "Metrics",
    "PackageDigest",
    "Plan",
    "GramineEnclave",
    "LaunchInfo",
    "ProjectInfo",
    "ProjectRequest",
    "SimulationOut",
    "read_answer",
]

#: Largest owner certificate chain, in characters of PEM.
MAX_CERTIFICATE_PEM: Final = 64 * 1024
_PLAN_NAME: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MAX_PLAN_MEMORY_MIB: Final = 4 * 1024 * 1024
MAX_PLAN_CORES: Final = 1024
MAX_PLAN_LIFETIME_DAYS: Final = 10 * 366
MAX_PLAN_CONFIGURE_TIMEOUT_MINUTES: Final = 7 * 24 * 60
#: A plan's defaults: an app lives at most a year, and is configured within half an hour of
#: its creation (``confide deploy`` waits 10 minutes for each step by default).
DEFAULT_MAX_LIFETIME_DAYS: Final = 365
DEFAULT_CONFIGURE_TIMEOUT_MINUTES: Final = 30


@dataclass(frozen=True, slots=True)
class Plan:
    """A size of enclave an app may ask for."""

    name: str
    memory_mib: int
    cores: int
    #: The latest ``expires_at`` an app may ask for, in days from its creation.
    max_lifetime_days: int = DEFAULT_MAX_LIFETIME_DAYS
    #: An app never configured this long after its creation is stopped (its deploy died).
    configure_timeout_minutes: int = DEFAULT_CONFIGURE_TIMEOUT_MINUTES

    @property
    def max_lifetime(self) -> timedelta:
        return timedelta(days=self.max_lifetime_days)

    @property
    def configure_timeout(self) -> timedelta:
        return timedelta(minutes=self.configure_timeout_minutes)

    def __post_init__(self) -> None:
        if not _PLAN_NAME.match(self.name):
            raise UsageError(
                f"plan name {self.name!r} must be 1 to 32 lower-case letters, digits or hyphens"
            )
        for field, top in (
            ("memory_mib", MAX_PLAN_MEMORY_MIB),
            ("cores", MAX_PLAN_CORES),
            ("max_lifetime_days", MAX_PLAN_LIFETIME_DAYS),
            ("configure_timeout_minutes", MAX_PLAN_CONFIGURE_TIMEOUT_MINUTES),
        ):
            value = getattr(self, field)
            if not 0 < value <= top:
                raise UsageError(f"plan {self.name}: {field} must be in 1..{top}, got {value}")


def _hex32(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if not isinstance(value, str):
        raise ValueError("is not hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError("is not hex") from None
    if len(raw) != 32:
        raise ValueError("is not 32 bytes of hex")
    return raw


def _host_port(value: object) -> HostPort:
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError("is not host:port")
    try:
        return HostPort.parse(value, "host:port")
    except UsageError as exc:
        raise ValueError(f"is not host:port: {exc}") from None


def _launch(value: object) -> LaunchManifest:
    if isinstance(value, LaunchManifest):
        return value
    try:
        return LaunchManifest.from_dict(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


#: 32 bytes, hex on the wire.
Hex32 = Annotated[
    bytes,
    PlainValidator(_hex32),
    PlainSerializer(lambda v: v.hex(), return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
]
#: ``host:port`` (``[v6]:port``) on the wire.
HostPortText = Annotated[
    HostPort,
    PlainValidator(_host_port),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string"}),
]
#: The launch manifest (:class:`LaunchManifest`), as the object :meth:`LaunchManifest.to_dict`
#: gives: recompute the fingerprint from it.
LaunchObject = Annotated[
    LaunchManifest,
    PlainValidator(_launch),
    PlainSerializer(lambda v: v.to_dict(), return_type=dict[str, Any]),
    WithJsonSchema({"type": "object"}),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_LENGTH)]


class _Body(BaseModel):
    """A body: its validator is built when first used, not at import (the CLI starts faster)."""

    model_config = ConfigDict(defer_build=True)


# -- requests --------------------------------------------------------------------------------


class ManifestIn(_Body):
    """What an owner asks for when deploying an app (the ``manifest`` form field of
    ``POST /apps``), as the operator validates it (then checks the plan, the dates
    and the certificate itself)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, defer_build=True
    )

    #: 1 to 63 lower-case letters, digits and inner hyphens or underscores (not a DNS name).
    name: Name
    project: Name = "default"
    application: Annotated[str, Field(pattern=APPLICATION_PATTERN, max_length=APPLICATION_LENGTH)]
    healthcheck: Annotated[
        str, Field(pattern=HEALTHCHECK_PATTERN, max_length=HEALTHCHECK_LENGTH)
    ] = "/"
    plan: Name
    expires_at: AwareDatetime
    tls: TlsMode
    #: The owner's domain (``tls: owner`` only), lower-case.
    domain: Annotated[str, Field(pattern=DOMAIN_PATTERN, max_length=DOMAIN_LENGTH)] | None = None
    #: The owner's certificate chain in PEM, leaf first (``tls: owner`` only). Never a key.
    certificate: Annotated[str, Field(max_length=MAX_CERTIFICATE_PEM)] | None = None

    @field_serializer("expires_at")
    def _iso(self, value: datetime) -> str:
        return value.isoformat()

    def to_json(self) -> str:
        """The form field's JSON (the fields not given are left out)."""
        return self.model_dump_json(exclude_none=True)


class DeployManifest(ManifestIn):
    """:class:`ManifestIn` as the owner builds it: built by keyword, it also refuses (with
    :class:`UsageError`) what must never leave the owner's machine (a private key) or
    could never be accepted."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UsageError(
                f"the deploy manifest is refused: {describe(exc)}",
                hint="fix the project file; nothing was uploaded",
            ) from None
        if self.certificate is not None and "PRIVATE KEY" in self.certificate:
            raise UsageError(
                "the certificate holds a private key: it never goes to the operator, "
                "only to the attested enclave"
            )
        owner = self.tls == TlsMode.OWNER
        if owner != (self.domain is not None) or owner != (self.certificate is not None):
            raise UsageError("a domain and a certificate are given exactly when tls is owner")


class ProjectRequest(BaseModel):
    """``POST /projects`` (built at import: FastAPI reads it as a body, which it cannot do
    with a deferred model)."""

    model_config = ConfigDict(extra="forbid")

    name: Name


# -- answers ---------------------------------------------------------------------------------


class PackageDigest(_Body):
    sha256: Hex32
    size: int


#: ``sgx.enclave_size`` as Gramine writes it (``512M``, ``4G``) and the most ``sgx.max_threads``.
GRAMINE_ENCLAVE_SIZE_PATTERN: Final = r"^[1-9][0-9]{0,5}[KMG]$"
MAX_GRAMINE_THREADS: Final = 4096


class GramineEnclave(_Body):
    """How the operator renders an app's Gramine manifest beyond the launch manifest: the
    ``sgx.enclave_size`` and ``sgx.max_threads`` it passes to
    :func:`confide.gramine.app_manifest`. Not trusted: they are inputs of the owner's
    prediction of MRENCLAVE, so a wrong value only makes the prediction differ from the
    quote, and the verification fails closed (ADR 0018)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    enclave_size: Annotated[str, Field(pattern=GRAMINE_ENCLAVE_SIZE_PATTERN, max_length=7)]
    max_threads: Annotated[int, Field(ge=1, le=MAX_GRAMINE_THREADS)]


class LaunchInfo(_Body):
    """``GET /launch``: how the operator launches apps: its TEE and, with ``tee: gramine``,
    each plan's :class:`GramineEnclave` (what an owner predicts MRENCLAVE with before a
    deploy; a deployed app's record states its own). Not trusted, like the record's."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    tee: str
    gramine: dict[str, GramineEnclave] | None = None


class AppRecord(_Body):
    """One app as the operator describes it.

    ``launch`` is the launch manifest the operator will start the runtime
    with: its measurement, :attr:`fingerprint`, is what the enclave's quote
    must carry. ``operator_fingerprint`` (``fingerprint`` on the wire) is
    what the operator says it is, for information; :attr:`fingerprint_agrees`
    compares the two.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: uuid.UUID
    name: str
    project: str
    application: str
    healthcheck: str
    plan: str
    expires_at: AwareDatetime
    tls: TlsMode
    #: The owner's domain (``tls: owner``).
    domain: str | None
    #: The owner's certificate chain, PEM (public).
    certificate: str | None
    package: PackageDigest
    status: AppStatus
    status_detail: str | None
    desired_state: DesiredState
    delete_requested: bool
    #: ``<id>.<base domain>``, then the owner's domain.
    domains: tuple[str, ...]
    #: ``host:port`` of the operator's router, which serves every domain above.
    router: HostPortText
    #: ``sgx``, ``tdx``, ``simulation``, ... as the operator's settings say.
    tee: str
    #: With ``tee: gramine``: how the enclave's Gramine manifest is rendered (else ``None``).
    gramine: GramineEnclave | None = None
    launch: LaunchObject
    #: The SHA-256 measurement of ``launch`` as the operator computed it.
    operator_fingerprint: Hex32 = Field(alias="fingerprint")
    #: PEM of the simulation root CA, when the operator's TEE is simulated.
    simulation_root_ca: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _launch_is_this_apps(self) -> AppRecord:
        if self.launch.app_id != self.id:
            raise ValueError(
                f"launch is the manifest of app {self.launch.app_id}, not of app {self.id}"
            )
        return self

    @property
    def fingerprint(self) -> bytes:
        """The measurement of :attr:`launch`, recomputed here."""
        return self.launch.measurement()

    @property
    def fingerprint_agrees(self) -> bool:
        return self.fingerprint == self.operator_fingerprint

    @property
    def package_sha256(self) -> bytes:
        return self.package.sha256

    @property
    def package_size(self) -> int:
        return self.package.size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``--json`` output (the fingerprint is the recomputed one)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "project": self.project,
            "application": self.application,
            "healthcheck": self.healthcheck,
            "plan": self.plan,
            "status": self.status.value,
            "status_detail": self.status_detail,
            "desired_state": self.desired_state.value,
            "delete_requested": self.delete_requested,
            "domains": list(self.domains),
            "router": {"host": self.router.host, "port": self.router.port},
            "tls": self.tls.value,
            "domain": self.domain,
            "package": {"sha256": self.package_sha256.hex(), "size": self.package_size},
            "tee": self.tee,
            "gramine": None if self.gramine is None else self.gramine.model_dump(),
            "launch": self.launch.to_dict(),
            "fingerprint": self.fingerprint.hex(),
            "operator_fingerprint": self.operator_fingerprint.hex(),
            "expires_at": self.expires_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class AppList(_Body):
    apps: list[AppRecord]


class ProjectInfo(_Body):
    name: str
    created_at: AwareDatetime
    apps: int


class Account(_Body):
    """``GET /me``: who the token belongs to, and the account's limits."""

    account: str
    token_id: int
    apps: int
    max_apps: int
    max_package_size: int


class Metrics(_Body):
    app_id: uuid.UUID
    status: AppStatus
    restarts: int
    #: Seconds since the current run reached ``running``; null when not running.
    uptime_seconds: float | None
    #: Total seconds spent in each status so far.
    status_seconds: dict[str, float]
    #: Numbers from the backend (memory, CPU, ...), when it provides any.
    runtime: dict[str, float]


class Health(_Body):
    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SimulationOut(_Body):
    """``GET /simulation``: ``{"simulated": false}``, or the simulated TEE's trust material."""

    simulated: bool
    #: PEM of the simulation root CA: the trust anchor of the simulated quotes.
    root_ca_pem: str | None = None
    #: Collateral for the simulated quotes, issued at the time of the request.
    collateral: dict[str, Any] | None = None


# -- reading answers -------------------------------------------------------------------------


_T = TypeVar("_T")

_WORDS: Final = {
    "missing": "is missing",
    "bool_type": "is not true or false",
    "string_type": "is not a string",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "float_type": "is not a number",
    "uuid_type": "is not a UUID",
    "uuid_parsing": "is not a UUID",
    "datetime_type": "is not an ISO 8601 time",
    "datetime_parsing": "is not an ISO 8601 time",
    "datetime_from_date_parsing": "is not an ISO 8601 time",
    "timezone_aware": "is not a time with its time zone (timezone-aware)",
    "model_type": "is not a JSON object",
    "model_attributes_type": "is not a JSON object",
    "dict_type": "is not a JSON object",
    "dataclass_type": "is not a JSON object",
    "list_type": "is not a JSON list",
    "tuple_type": "is not a JSON list",
}


def _describe_one(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "the answer"
    kind = error["type"]
    if kind == "enum":
        return f"{where} is not one of {error.get('ctx', {}).get('expected', '')}"
    if kind in _WORDS:
        return f"{where} {_WORDS[kind]}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"{where} {message}" if message.startswith("is ") else f"{where}: {message}"


def describe(exc: ValidationError) -> str:
    """One line naming each wrong field (at most three)."""
    errors = exc.errors(include_url=False)
    shown = "; ".join(_describe_one(e) for e in errors[:3])
    return shown + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")


def read_answer(body: bytes, kind: type[_T] | Any, *, max_bytes: int) -> _T:
    """``body`` (strict JSON: :mod:`confide.strictjson`) validated as ``kind`` (a model, or
    e.g. ``list[Plan]``), strictly: no number for a string, no string for a number.

    Raises :class:`WireError` naming the field that is wrong.
    """
    try:
        loads(body, what="the answer", max_bytes=max_bytes)  # no repeated key, no NaN
    except JsonError as exc:
        raise WireError(f"not JSON: {exc.message}") from None
    try:
        result: _T = TypeAdapter(kind).validate_json(body, strict=True)
    except ValidationError as exc:
        raise WireError(describe(exc)) from None
    except UsageError as exc:  # a dataclass's own checks (a plan's bounds)
        raise WireError(str(exc)) from None
    return result
