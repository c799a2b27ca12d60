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

import io
import json
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from confide import __version__, strictjson
from confide.attestation import Collateral
from confide.errors import AttestationError, JsonError, OperatorError, UsageError, WireError
from confide.wire import API_PREFIX

if TYPE_CHECKING:
    from confide.wire.api import (
        Account,
        AppRecord,
        DeployManifest,
        Health,
        LaunchInfo,
        Metrics,
        Plan,
        ProjectInfo,
        SimulationOut,
    )

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "OperatorClient",
    "OperatorError",
    "ProgressCallback",
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
class SimulationInfo:
    """What an operator with a simulated TEE publishes so anyone can verify its quotes.

    Simulated quotes prove nothing about hardware: verify them only with
    ``allow_simulation`` and this root as the trust anchor.
    """

    root_ca: x509.Certificate
    #: Collateral for its quotes, issued for the time of the call; ``None`` if not published.
    collateral: Collateral | None = field(repr=False)


# -- parsing ---------------------------------------------------------------------------------

_T = TypeVar("_T")


def _simulation(body: SimulationOut) -> SimulationInfo | None:
    if not body.simulated:
        return None
    if body.root_ca_pem is None:
        raise WireError("the operator's TEE is simulated but it publishes no root_ca_pem")
    try:
        root = x509.load_pem_x509_certificate(body.root_ca_pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise WireError(f"root_ca_pem is not a PEM certificate: {exc}") from None
    collateral = None
    if body.collateral is not None:
        try:
            collateral = Collateral.from_json(json.dumps(body.collateral))
        except AttestationError as exc:
            raise WireError(f"collateral: {exc}") from None
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

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never the token
        return f"OperatorClient({self.base_url!r})"

    # -- calls -------------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health``: whether the operator's database answers (503 is not an error here)."""
        from confide.wire.api import Health

        return self._read(self._call("GET", "/health", ok=(200, 503)), "GET /health", Health)

    def me(self) -> Account:
        """Who the token belongs to; also how to check a token."""
        from confide.wire.api import Account

        return self._read(self._call("GET", "/me"), "GET /me", Account)

    def plans(self) -> list[Plan]:
        from confide.wire.api import Plan

        return self._read(self._call("GET", "/plans"), "GET /plans", list[Plan])

    def launch_info(self) -> LaunchInfo:
        """How the operator launches apps (``GET /launch``): its TEE, Gramine's shapes."""
        from confide.wire.api import LaunchInfo

        return self._read(self._call("GET", "/launch"), "GET /launch", LaunchInfo)

    def projects(self) -> list[ProjectInfo]:
        from confide.wire.api import ProjectInfo

        return self._read(self._call("GET", "/projects"), "GET /projects", list[ProjectInfo])

    def list_apps(self, project: str | None = None) -> list[AppRecord]:
        """The account's apps that are not deleted, oldest first."""
        from confide.wire.api import AppList

        params = {"project": project} if project is not None else None
        body = self._call("GET", "/apps", params=params)
        return self._read(body, "GET /apps", AppList).apps

    def get_app(
        self, app_id: uuid.UUID | str, *, wait: float = 0.0, seen: datetime | None = None
    ) -> AppRecord:
        """The app; with ``wait`` seconds and ``seen`` (the ``updated_at`` of the record the
        caller has), the operator holds its answer until the record changes or the wait ends
        (an operator without long-polls answers at once). Keep ``wait`` below the timeout."""
        path = f"/apps/{_app_id(app_id)}"
        params = None
        if wait > 0 and seen is not None:
            params = {"wait": f"{wait:g}", "seen": seen.isoformat()}
        return self._app(self._call("GET", path, params=params, app_id=app_id), f"GET {path}")

    def stop_app(self, app_id: uuid.UUID | str) -> AppRecord:
        """Ask for the app to stop; the operator answers at once, the app stops soon after."""
        path = f"/apps/{_app_id(app_id)}/stop"
        return self._app(self._call("POST", path, app_id=app_id), f"POST {path}")

    def delete_app(self, app_id: uuid.UUID | str) -> AppRecord:
        """Stop the app and delete it (at once if it is not running, else once it stopped)."""
        path = f"/apps/{_app_id(app_id)}"
        return self._app(self._call("DELETE", path, app_id=app_id), f"DELETE {path}")

    def metrics(self, app_id: uuid.UUID | str) -> Metrics:
        from confide.wire.api import Metrics

        path = f"/apps/{_app_id(app_id)}/metrics"
        return self._read(self._call("GET", path, app_id=app_id), f"GET {path}", Metrics)

    def create_app(
        self,
        package: Path,
        manifest: DeployManifest,
        *,
        progress: ProgressCallback | None = None,
        requirements: bytes | None = None,
    ) -> AppRecord:
        """Upload an encrypted package (streamed from disk) and deploy it with ``manifest``
        and, when given, the app's requirements lock (its canonical bytes, ADR 0024)."""
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
            if requirements is not None:
                data["requirements"] = requirements.decode("ascii")
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
        return self._app(body, "POST /apps")

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
            raise self.malformed("GET /ca", f"not a PEM certificate: {exc}") from None

    def simulation(self) -> SimulationInfo | None:
        """``None`` for a real TEE; for a simulated one, its root CA and fresh collateral."""
        from confide.wire.api import SimulationOut

        what = "GET /simulation"
        body: SimulationOut = self._read(self._call("GET", "/simulation"), what, SimulationOut)
        try:
            return _simulation(body)
        except WireError as exc:
            raise self.malformed(what, str(exc)) from None

    def log_read(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``GET /log{path}`` of the release transparency log (no token needed): the JSON
        object answered, strictly read; its shape is checked by :mod:`._releases`."""
        return self._json_object(self._call("GET", f"/log{path}", params=params), f"GET /log{path}")

    def log_statement(self, envelope: bytes, owner_key: str) -> dict[str, Any]:
        """``POST /log/statements``: log a signed release or revocation statement."""
        body = json.dumps({"envelope": envelope.decode("utf-8"), "owner_key": owner_key})
        answer = self._call("POST", "/log/statements", ok=(201,), content=body.encode())
        return self._json_object(answer, "POST /log/statements")

    def _json_object(self, body: bytes, what: str) -> dict[str, Any]:
        try:
            return strictjson.loads_object(body, what="the answer", max_bytes=MAX_RESPONSE_BYTES)
        except JsonError as exc:
            raise self.malformed(what, str(exc)) from None

    # -- plumbing ----------------------------------------------------------------------------

    def _read(self, body: bytes, what: str, kind: type[_T] | Any) -> _T:
        """``body`` validated as ``kind``, a body of :mod:`confide.wire.api`."""
        from confide.wire.api import read_answer

        try:
            result: _T = read_answer(body, kind, max_bytes=MAX_RESPONSE_BYTES)
        except WireError as exc:
            raise self.malformed(what, str(exc)) from None
        return result

    def _app(self, body: bytes, what: str) -> AppRecord:
        from confide.wire.api import AppRecord

        return self._read(body, what, AppRecord)

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
        content: bytes | None = None,
    ) -> bytes:
        """Send one request; the whole body of an accepted answer, bounded."""
        with self._stream(
            method,
            path,
            ok=ok,
            params=params,
            app_id=app_id,
            files=files,
            data=data,
            content=content,
        ) as response:
            try:
                return _read_bounded(response, MAX_RESPONSE_BYTES)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            except _TooLong:
                raise self.malformed(
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
        content: bytes | None = None,
    ) -> Iterator[httpx.Response]:
        request = self._http.build_request(
            method,
            path,
            params=params,
            files=files,
            data=data,
            content=content,
            headers={"Content-Type": "application/json"} if content is not None else None,
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

    def malformed(self, what: str, problem: str) -> OperatorError:
        """The error for an answer to ``what`` (e.g. ``GET /log``) that is not as specified."""
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

        def error(code: str, text: str, **more: Any) -> OperatorError:
            return OperatorError(code, text, url=url, status=status, **more)

        if status == 401:
            return error(
                "operator.unauthorized",
                f"the operator at {url} did not accept the token"
                + (f" ({message})" if message else ""),
                hint="run `confide login --url URL --token TOKEN` with a valid token",
            )
        if status == 404 and app_id is not None:
            return error(
                "operator.not_found",
                f"no app {app_id} on this operator (or not yours)",
                hint="`confide list` shows your apps",
            )
        if status == 413:
            found = _LIMIT.search(message)
            limit = int(found.group(1)) if found else None
            return error(
                "operator.too_large",
                "the package is too large for this operator"
                + (f" (its limit is {limit} bytes)" if limit is not None else f": {message}"),
                limit=limit,
            )
        if status == 422:
            text = "; ".join(f"{name}: {msg}" for name, msg in fields) or message
            return error("operator.invalid", f"the operator refused {method} {path}: {text}")
        if status == 409:
            return error("operator.conflict", message)
        return error(
            "operator.http",
            f"the operator at {url} answered {method} {path} with HTTP {status}"
            + (f": {message}" if message else ""),
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
