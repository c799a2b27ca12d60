"""A typed client of the operator's REST API (``/api/v1``).

Every method returns a frozen model parsed from the answer (no raw dict leaves
this module) or raises :class:`OperatorError`, one line naming what failed
and what to do. Every call has a timeout; the HTTP transport is injectable
(``httpx.MockTransport`` in tests, a transport with its own TLS context for an
operator behind a private CA). Redirects are never followed, so the token is
only ever sent to ``base_url``.

The fingerprint an operator reports is informational: clients recompute it
from the launch manifest (:attr:`AppRecord.fingerprint`) and compare the
enclave's quote with that.

Error mapping (``OperatorError.code``):

=====================  ==========================================================
HTTP 401               ``operator.unauthorized``: run ``confide login``
HTTP 404 (an app)      ``operator.not_found``: no app ID on this operator (or not yours)
HTTP 409               ``operator.conflict``: the operator's message (limit, duplicate)
HTTP 413               ``operator.too_large``: the package is too large (``limit``)
HTTP 422               ``operator.invalid``: each ``field: message`` from ``detail[]``
other HTTP errors      ``operator.http``: the status and the operator's message
connection, timeout    ``operator.unreachable``: the URL and the reason
a malformed answer     ``operator.response``: what was wrong with it
=====================  ==========================================================

Example::

    >>> from confide.client import OperatorClient
    >>> with OperatorClient("https://operator.example", token) as client:  # doctest: +SKIP
    ...     for app in client.list_apps():
    ...         print(app.id, app.status, app.fingerprint.hex())
"""

from __future__ import annotations

import enum
import io
import json
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, NoReturn, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from confide import __version__
from confide.attestation import Collateral
from confide.errors import AttestationError, OperatorError, UsageError
from confide.wire import API_PREFIX, AppStatus, HostPort, LaunchManifest, TlsMode

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "Account",
    "AppRecord",
    "DeployManifest",
    "Health",
    "Metrics",
    "OperatorClient",
    "OperatorError",
    "Plan",
    "ProgressCallback",
    "ProjectInfo",
    "SimulationInfo",
    "normalize_url",
]

#: Seconds each call may take to connect, send, or wait for the next bytes.
DEFAULT_TIMEOUT: Final = 30.0
#: Largest answer read (the operator sends at most 4 MiB of log at once).
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
#: Largest log line :meth:`OperatorClient.follow_logs` holds before handing it over.
MAX_LOG_LINE: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024
_LIMIT: Final = re.compile(r"limit of (\d+) bytes")
_ERRNO: Final = re.compile(r"^\[Errno -?\d+\] ")

#: Told ``(bytes sent, total bytes)`` as the package is uploaded.
ProgressCallback = Callable[[int, int], None]


# -- models ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeployManifest:
    """What an owner asks for when deploying (the ``manifest`` form field of ``POST /apps``).

    The operator checks everything again (plans, dates, the certificate); the
    checks here only refuse what must never leave the owner's machine (a
    private key) or could not possibly be accepted.
    """

    name: str
    application: str
    plan: str
    expires_at: datetime
    tls: TlsMode
    project: str = "default"
    healthcheck: str = "/"
    #: The owner's domain (``tls=OWNER`` only).
    domain: str | None = None
    #: The owner's certificate chain, PEM, leaf first (``tls=OWNER`` only). Never a key.
    certificate: str | None = None

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise UsageError("expires_at must be a timezone-aware datetime")
        if self.certificate is not None and "PRIVATE KEY" in self.certificate:
            raise UsageError(
                "the certificate holds a private key: it never goes to the operator, "
                "only to the attested enclave"
            )
        owner = self.tls == TlsMode.OWNER
        if owner != (self.domain is not None) or owner != (self.certificate is not None):
            raise UsageError("a domain and a certificate are given exactly when tls is owner")

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "name": self.name,
            "project": self.project,
            "application": self.application,
            "healthcheck": self.healthcheck,
            "plan": self.plan,
            "expires_at": self.expires_at.isoformat(),
            "tls": self.tls.value,
        }
        if self.domain is not None:
            doc["domain"] = self.domain
        if self.certificate is not None:
            doc["certificate"] = self.certificate
        return json.dumps(doc)


@dataclass(frozen=True, slots=True)
class Account:
    """``GET /me``: who the token belongs to, and the account's limits."""

    account: str
    token_id: int
    apps: int
    max_apps: int
    max_package_size: int


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    memory_mib: int
    cores: int
    #: The latest expiry an app may ask for, in days (``None``: the operator does not say).
    max_lifetime_days: int | None = None
    #: Minutes an app has to be configured before it is stopped (``None``: not said).
    configure_timeout_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    name: str
    created_at: datetime
    apps: int


@dataclass(frozen=True, slots=True)
class AppRecord:
    """One app as the operator describes it.

    ``launch`` is the launch manifest the operator will start the runtime
    with: its measurement, :attr:`fingerprint`, is what the enclave's quote
    must carry. ``operator_fingerprint`` is what the operator says it is,
    for information; :attr:`fingerprint_agrees` compares the two.
    """

    id: uuid.UUID
    name: str
    project: str
    application: str
    healthcheck: str
    plan: str
    status: AppStatus
    status_detail: str | None
    desired_state: str
    delete_requested: bool
    #: ``<id>.<base domain>``, then the owner's domain.
    domains: tuple[str, ...]
    router: HostPort
    tls: TlsMode
    #: The owner's domain (``tls=OWNER``).
    domain: str | None
    #: The owner's certificate chain, PEM (public).
    certificate: str | None
    package_sha256: bytes
    package_size: int
    #: ``sgx``, ``tdx``, ``simulation``, ... as the operator's settings say.
    tee: str
    launch: LaunchManifest
    operator_fingerprint: bytes
    #: PEM of the operator's simulation root CA, when its TEE is simulated.
    simulation_root_ca: str | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime

    @property
    def fingerprint(self) -> bytes:
        """The measurement of :attr:`launch`, recomputed here."""
        return self.launch.measurement()

    @property
    def fingerprint_agrees(self) -> bool:
        return self.fingerprint == self.operator_fingerprint

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
            "desired_state": self.desired_state,
            "delete_requested": self.delete_requested,
            "domains": list(self.domains),
            "router": {"host": self.router.host, "port": self.router.port},
            "tls": self.tls.value,
            "domain": self.domain,
            "package": {"sha256": self.package_sha256.hex(), "size": self.package_size},
            "tee": self.tee,
            "launch": self.launch.to_dict(),
            "fingerprint": self.fingerprint.hex(),
            "operator_fingerprint": self.operator_fingerprint.hex(),
            "expires_at": self.expires_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Metrics:
    app_id: uuid.UUID
    status: AppStatus
    restarts: int
    #: Seconds since the current run reached ``running``; ``None`` when not running.
    uptime_seconds: float | None
    #: Total seconds spent in each status so far.
    status_seconds: Mapping[str, float]
    #: Numbers from the operator's backend (memory, CPU, ...), when it provides any.
    runtime: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    status: str


@dataclass(frozen=True, slots=True)
class SimulationInfo:
    """What an operator with a simulated TEE publishes so anyone can verify its quotes.

    Simulated quotes prove nothing about hardware: verify them only with
    ``allow_simulation`` and this root as the trust anchor.
    """

    root_ca: x509.Certificate
    #: Collateral for its quotes, issued for the time of the call; ``None`` if not published.
    collateral: Collateral | None = field(repr=False)


# -- parsing ---------------------------------------------------------------------------------


_E = TypeVar("_E", bound=enum.StrEnum)
_T = TypeVar("_T")


class _Malformed(Exception):
    """An answer does not have the shape it should (mapped to ``operator.response``)."""


class _Doc:
    """Typed reads from one JSON object, naming the field when one is wrong."""

    def __init__(self, value: object, where: str = "") -> None:
        if not isinstance(value, dict):
            raise _Malformed(f"{where or 'the answer'} is not a JSON object")
        self._value: dict[str, object] = value
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> object:
        if key not in self._value:
            raise _Malformed(f"{self._name(key)} is missing")
        return self._value[key]

    def _wrong(self, key: str, what: str) -> NoReturn:
        raise _Malformed(f"{self._name(key)} is not {what}: {self._value.get(key)!r:.80}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            self._wrong(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self._value.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            self._wrong(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self._value.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self._get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self._wrong(key, "a number")
        return float(value)

    def opt_number(self, key: str) -> float | None:
        return None if self._value.get(key) is None else self.number(key)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            self._wrong(key, "true or false")
        return value

    def ident(self, key: str) -> uuid.UUID:
        try:
            return uuid.UUID(self.text(key))
        except ValueError:
            self._wrong(key, "a UUID")

    def time(self, key: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.text(key))
        except ValueError:
            self._wrong(key, "an ISO 8601 time")
        if value.tzinfo is None:
            self._wrong(key, "a time with its time zone")
        return value

    def hexbytes(self, key: str, size: int) -> bytes:
        try:
            value = bytes.fromhex(self.text(key))
        except ValueError:
            self._wrong(key, "hex")
        if len(value) != size:
            self._wrong(key, f"{size} bytes of hex")
        return value

    def choice(self, key: str, kind: type[_E]) -> _E:
        try:
            return kind(self.text(key))
        except ValueError:
            self._wrong(key, "one of " + ", ".join(m.value for m in kind))

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._wrong(key, "a list of strings")
        return tuple(value)

    def numbers(self, key: str) -> dict[str, float]:
        value = self._get(key)
        if not isinstance(value, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            self._wrong(key, "an object of numbers")
        return {str(k): float(v) for k, v in value.items()}

    def doc(self, key: str) -> _Doc:
        return _Doc(self._get(key), self._name(key))

    def raw(self, key: str) -> object:
        return self._get(key)

    def opt_raw(self, key: str) -> object:
        return self._value.get(key)


def _docs(value: object, where: str) -> list[_Doc]:
    if not isinstance(value, list):
        raise _Malformed(f"{where} is not a JSON list")
    return [_Doc(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _account(d: _Doc) -> Account:
    return Account(
        account=d.text("account"),
        token_id=d.integer("token_id"),
        apps=d.integer("apps"),
        max_apps=d.integer("max_apps"),
        max_package_size=d.integer("max_package_size"),
    )


def _plan(d: _Doc) -> Plan:
    return Plan(
        name=d.text("name"),
        memory_mib=d.integer("memory_mib"),
        cores=d.integer("cores"),
        max_lifetime_days=d.opt_integer("max_lifetime_days"),
        configure_timeout_minutes=d.opt_integer("configure_timeout_minutes"),
    )


def _project(d: _Doc) -> ProjectInfo:
    return ProjectInfo(name=d.text("name"), created_at=d.time("created_at"), apps=d.integer("apps"))


def _app(d: _Doc) -> AppRecord:
    app_id = d.ident("id")
    launch_raw = d.raw("launch")
    try:
        launch = LaunchManifest.from_json(json.dumps(launch_raw))
    except (UsageError, TypeError, ValueError) as exc:
        raise _Malformed(f"launch: {exc}") from None
    if launch.app_id != app_id:
        raise _Malformed(f"launch is the manifest of app {launch.app_id}, not of app {app_id}")
    try:
        router = HostPort.parse(d.text("router"), "router")
    except UsageError as exc:
        raise _Malformed(f"router: {exc}") from None
    package = d.doc("package")
    return AppRecord(
        id=app_id,
        name=d.text("name"),
        project=d.text("project"),
        application=d.text("application"),
        healthcheck=d.text("healthcheck"),
        plan=d.text("plan"),
        status=d.choice("status", AppStatus),
        status_detail=d.opt_text("status_detail"),
        desired_state=d.text("desired_state"),
        delete_requested=d.flag("delete_requested"),
        domains=d.texts("domains"),
        router=router,
        tls=d.choice("tls", TlsMode),
        domain=d.opt_text("domain"),
        certificate=d.opt_text("certificate"),
        package_sha256=package.hexbytes("sha256", 32),
        package_size=package.integer("size"),
        tee=d.text("tee"),
        launch=launch,
        operator_fingerprint=d.hexbytes("fingerprint", 32),
        simulation_root_ca=d.opt_text("simulation_root_ca"),
        expires_at=d.time("expires_at"),
        created_at=d.time("created_at"),
        updated_at=d.time("updated_at"),
    )


def _metrics(d: _Doc) -> Metrics:
    return Metrics(
        app_id=d.ident("app_id"),
        status=d.choice("status", AppStatus),
        restarts=d.integer("restarts"),
        uptime_seconds=d.opt_number("uptime_seconds"),
        status_seconds=d.numbers("status_seconds"),
        runtime=d.numbers("runtime"),
    )


def _simulation(d: _Doc) -> SimulationInfo | None:
    if not d.flag("simulated"):
        return None
    pem = d.opt_text("root_ca_pem")
    if pem is None:
        raise _Malformed("the operator's TEE is simulated but it publishes no root_ca_pem")
    try:
        root = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise _Malformed(f"root_ca_pem is not a PEM certificate: {exc}") from None
    collateral = None
    raw = d.opt_raw("collateral")
    if raw is not None:
        try:
            collateral = Collateral.from_json(json.dumps(raw))
        except AttestationError as exc:
            raise _Malformed(f"collateral: {exc}") from None
    return SimulationInfo(root_ca=root, collateral=collateral)


def _detail(body: bytes) -> tuple[str, list[tuple[str, str]]]:
    """FastAPI's ``detail``: a message, or ``[(field, message), ...]`` for a 422."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip(), []
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, str):
        return detail, []
    if isinstance(detail, list):
        fields = []
        for item in detail:
            if not isinstance(item, dict):
                continue
            loc = item.get("loc")
            parts = [str(p) for p in loc] if isinstance(loc, list) else []
            if parts and parts[0] in ("body", "query", "path", "header"):
                parts = parts[1:]
            fields.append((".".join(parts) or "request", str(item.get("msg", "invalid"))))
        return "", fields
    return "", []


# -- the client ------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """``scheme://host[:port][/path]`` without a trailing slash; only http and https."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise UsageError(f"the operator URL {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the operator URL must be http(s)://host[:port], got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(
            f"the operator URL must not carry a query, a fragment or credentials: {url!r}"
        )
    return text.rstrip("/")


class _ProgressFile(io.BufferedReader):
    """A package file that reports how much of it was read (that is, sent)."""

    def __init__(self, raw: io.RawIOBase, total: int, progress: ProgressCallback) -> None:
        super().__init__(raw, buffer_size=_CHUNK)
        self._total = total
        self._sent = 0
        self._progress = progress

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self._sent += len(chunk)
        self._progress(self._sent, self._total)
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        self._sent = position
        return position


class OperatorClient:
    """The operator API, as typed calls; a context manager (or call :meth:`close`).

    ``token`` is sent as ``Authorization: Bearer``; ``None`` for the calls
    that need none (:meth:`health`, :meth:`ca_certificate`, :meth:`simulation`).
    ``timeout`` bounds connecting, each send and each wait for data, in
    seconds. ``transport`` replaces the network (``httpx.MockTransport``, or
    ``httpx.HTTPTransport(verify=context)`` for an operator behind a private CA).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"the timeout must be positive, got {timeout}")
        self.base_url = normalize_url(base_url)
        self.timeout = timeout
        headers = {"User-Agent": f"confide/{__version__}", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never the token
        return f"OperatorClient({self.base_url!r})"

    # -- calls -------------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health``: whether the operator's database answers (503 is not an error here)."""
        body = self._call("GET", "/health", ok=(200, 503))
        status = self._one(body, "GET /health", lambda d: d.text("status"))
        return Health(ok=status == "ok", status=status)

    def me(self) -> Account:
        """Who the token belongs to; also how to check a token."""
        return self._one(self._call("GET", "/me"), "GET /me", _account)

    def plans(self) -> list[Plan]:
        return self._many(self._call("GET", "/plans"), "GET /plans", _plan)

    def projects(self) -> list[ProjectInfo]:
        return self._many(self._call("GET", "/projects"), "GET /projects", _project)

    def list_apps(self, project: str | None = None) -> list[AppRecord]:
        """The account's apps that are not deleted, oldest first."""
        params = {"project": project} if project is not None else None
        body = self._call("GET", "/apps", params=params)
        return self._many(body, "GET /apps", _app, key="apps")

    def get_app(self, app_id: uuid.UUID | str) -> AppRecord:
        path = f"/apps/{_app_id(app_id)}"
        return self._one(self._call("GET", path, app_id=app_id), f"GET {path}", _app)

    def stop_app(self, app_id: uuid.UUID | str) -> AppRecord:
        """Ask for the app to stop; the operator answers at once, the app stops soon after."""
        path = f"/apps/{_app_id(app_id)}/stop"
        return self._one(self._call("POST", path, app_id=app_id), f"POST {path}", _app)

    def delete_app(self, app_id: uuid.UUID | str) -> AppRecord:
        """Stop the app and delete it (at once if it is not running, else once it stopped)."""
        path = f"/apps/{_app_id(app_id)}"
        return self._one(self._call("DELETE", path, app_id=app_id), f"DELETE {path}", _app)

    def metrics(self, app_id: uuid.UUID | str) -> Metrics:
        path = f"/apps/{_app_id(app_id)}/metrics"
        return self._one(self._call("GET", path, app_id=app_id), f"GET {path}", _metrics)

    def create_app(
        self,
        package: Path,
        manifest: DeployManifest,
        *,
        progress: ProgressCallback | None = None,
    ) -> AppRecord:
        """Upload an encrypted package (streamed from disk) and deploy it with ``manifest``."""
        try:
            raw = package.open("rb", buffering=0)
        except OSError as exc:
            raise UsageError(f"cannot read the package {package}: {exc.strerror or exc}") from None
        with raw:
            if not isinstance(raw, io.RawIOBase):  # pragma: no cover - buffering=0 gives FileIO
                raise UsageError(f"{package} is not a regular file")
            total = _size(raw)
            file: IO[bytes] = (
                _ProgressFile(raw, total, progress)
                if progress is not None
                else io.BufferedReader(raw, buffer_size=_CHUNK)
            )
            files = {"package": (package.name, file, "application/octet-stream")}
            data = {"manifest": manifest.to_json()}
            try:
                body = self._call("POST", "/apps", ok=(201,), files=files, data=data)
            except OperatorError as exc:
                if exc.code != "operator.unreachable":
                    raise
                # An operator that refuses a large upload early may hang up before its 413.
                exc.hint = (
                    f"if it hung up during the upload, compare the package's {total} bytes "
                    "with the operator's limit (OperatorClient.me().max_package_size)"
                )
                raise
        return self._one(body, "POST /apps", _app)

    def logs(self, app_id: uuid.UUID | str, tail: int | None = None) -> str:
        """The runtime's output so far (at most the operator's last 4 MiB), or its last lines."""
        if tail is not None and tail < 0:
            raise UsageError(f"tail must be 0 or more, got {tail}")
        params = {"tail": str(tail)} if tail is not None else None
        body = self._call("GET", f"/apps/{_app_id(app_id)}/logs", params=params, app_id=app_id)
        return body.decode("utf-8", "replace")

    def follow_logs(
        self, app_id: uuid.UUID | str, tail: int | None = None
    ) -> Generator[str, None, None]:
        """The output's lines (without line ends) as they come, until the app stops.

        The wait for the next line is unbounded (an app may be quiet for
        hours); connecting and the first answer are not. Close the iterator
        (or leave its ``for`` loop) to hang up.
        """
        if tail is not None and tail < 0:
            raise UsageError(f"tail must be 0 or more, got {tail}")
        params = {"follow": "true"}
        if tail is not None:
            params["tail"] = str(tail)
        timeout = httpx.Timeout(self.timeout, read=None)
        path = f"/apps/{_app_id(app_id)}/logs"
        with self._stream("GET", path, params=params, timeout=timeout, app_id=app_id) as response:
            pending = b""
            try:
                for chunk in response.iter_bytes():  # as they come: no chunk size to fill
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.removesuffix(b"\r").decode("utf-8", "replace")
                    while len(pending) > MAX_LOG_LINE:
                        yield pending[:MAX_LOG_LINE].decode("utf-8", "replace")
                        pending = pending[MAX_LOG_LINE:]
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            if pending:
                yield pending.decode("utf-8", "replace")

    def ca_certificate(self) -> x509.Certificate:
        """The operator CA's certificate, which signs its router's (no token needed)."""
        body = self._call("GET", "/ca")
        try:
            return x509.load_pem_x509_certificate(body)
        except ValueError as exc:
            raise self._malformed("GET /ca", f"not a PEM certificate: {exc}") from None

    def simulation(self) -> SimulationInfo | None:
        """``None`` for a real TEE; for a simulated one, its root CA and fresh collateral."""
        return self._one(self._call("GET", "/simulation"), "GET /simulation", _simulation)

    # -- plumbing ----------------------------------------------------------------------------

    def _one(self, body: bytes, what: str, parse: Callable[[_Doc], _T]) -> _T:
        try:
            return parse(_Doc(self._decode(body, what)))
        except _Malformed as exc:
            raise self._malformed(what, str(exc)) from None

    def _many(
        self, body: bytes, what: str, parse: Callable[[_Doc], _T], *, key: str | None = None
    ) -> list[_T]:
        try:
            value = self._decode(body, what)
            if key is not None:
                value = _Doc(value).raw(key)
            return [parse(d) for d in _docs(value, key or "the answer")]
        except _Malformed as exc:
            raise self._malformed(what, str(exc)) from None

    def _decode(self, body: bytes, what: str) -> object:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise self._malformed(what, f"not JSON: {exc}") from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 202),
        params: Mapping[str, str] | None = None,
        app_id: uuid.UUID | str | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send one request; the whole body of an accepted answer, bounded."""
        with self._stream(
            method, path, ok=ok, params=params, app_id=app_id, files=files, data=data
        ) as response:
            try:
                return _read_bounded(response, MAX_RESPONSE_BYTES)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            except _TooLong:
                raise self._malformed(
                    f"{method} {path}", f"longer than {MAX_RESPONSE_BYTES} bytes"
                ) from None

    @contextmanager
    def _stream(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (200, 201, 202),
        params: Mapping[str, str] | None = None,
        app_id: uuid.UUID | str | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Iterator[httpx.Response]:
        request = self._http.build_request(
            method,
            path,
            params=params,
            files=files,
            data=data,
            timeout=timeout if timeout is not None else self._http.timeout,
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            if response.status_code not in ok:
                try:
                    body = _read_bounded(response, 64 * 1024)
                except (httpx.TransportError, _TooLong):
                    body = b""
                raise self._refused(response.status_code, body, method, path, app_id)
            yield response
        finally:
            response.close()

    # -- errors ------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.TransportError) -> OperatorError:
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {self.timeout:g} s"
        else:
            reason = _ERRNO.sub("", str(exc)) or type(exc).__name__
        return OperatorError(
            "operator.unreachable",
            f"cannot reach the operator at {self.base_url}: {reason}",
            url=self.base_url,
            hint="check the operator's URL and the network",
        )

    def _malformed(self, what: str, problem: str) -> OperatorError:
        return OperatorError(
            "operator.response",
            f"the operator at {self.base_url} sent an unexpected answer to {what}: {problem}",
            url=self.base_url,
            hint="is this a Confide operator of a compatible version?",
        )

    def _refused(
        self, status: int, body: bytes, method: str, path: str, app_id: uuid.UUID | str | None
    ) -> OperatorError:
        message, fields = _detail(body)
        url = self.base_url
        if status == 401:
            return OperatorError(
                "operator.unauthorized",
                f"the operator at {url} did not accept the token"
                + (f" ({message})" if message else ""),
                url=url,
                status=status,
                hint="run `confide login --url URL --token TOKEN` with a valid token",
            )
        if status == 404 and app_id is not None:
            return OperatorError(
                "operator.not_found",
                f"no app {app_id} on this operator (or not yours)",
                url=url,
                status=status,
                hint="`confide list` shows your apps",
            )
        if status == 413:
            found = _LIMIT.search(message)
            limit = int(found.group(1)) if found else None
            return OperatorError(
                "operator.too_large",
                "the package is too large for this operator"
                + (f" (its limit is {limit} bytes)" if limit is not None else f": {message}"),
                url=url,
                status=status,
                limit=limit,
            )
        if status == 422:
            text = "; ".join(f"{name}: {msg}" for name, msg in fields) or message
            return OperatorError(
                "operator.invalid",
                f"the operator refused {method} {path}: {text}",
                url=url,
                status=status,
            )
        if status == 409:
            return OperatorError("operator.conflict", message, url=url, status=status)
        return OperatorError(
            "operator.http",
            f"the operator at {url} answered {method} {path} with HTTP {status}"
            + (f": {message}" if message else ""),
            url=url,
            status=status,
        )


class _TooLong(Exception):
    pass


def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLong()
    parts: list[bytes] = []
    seen = 0
    for chunk in response.iter_bytes(_CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise _TooLong()
        parts.append(chunk)
    return b"".join(parts)


def _app_id(value: uuid.UUID | str) -> str:
    """An app ID as a path segment: only a UUID ever reaches the URL."""
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UsageError(f"an app ID is a UUID, got {value!r}") from None


def _size(raw: io.RawIOBase) -> int:
    try:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
    except OSError as exc:
        raise UsageError(f"the package must be a regular file: {exc}") from None
    return size
