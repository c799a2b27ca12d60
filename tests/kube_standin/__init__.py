"""An in-process stand-in of the Kubernetes API for the semantics the backend uses.

Written from the Kubernetes API conventions (sig-architecture/api-conventions.md) and
the API concepts page, not from any implementation:

- objects live in namespaces under ``/api/v1/namespaces/<ns>/<plural>[/<name>]``
  (``pods``, ``persistentvolumeclaims``, ``configmaps``) or, for a named API group,
  ``/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]`` (``leases`` of
  ``coordination.k8s.io/v1``, the leader-election objects);
- every change takes the next ``metadata.resourceVersion`` (one counter for the
  store, as etcd's revision); a list carries the store's version in ``metadata``;
- create of an existing name is 409 ``AlreadyExists``; an update whose
  ``resourceVersion`` is not the stored one is 409 ``Conflict``; a missing object is
  404 ``NotFound``; errors are ``Status`` objects (``kind: Status``, ``status:
  Failure``, ``reason``, ``code``, ``details``);
- ``labelSelector`` (equality terms) and ``fieldSelector`` (``metadata.name``,
  ``metadata.namespace``) filter lists and watches;
- ``?watch=true`` streams JSON lines ``{"type": ADDED|MODIFIED|DELETED, "object": ...}``
  of changes after ``resourceVersion``; without one, ADDED events for what exists first;
  a version older than the kept history (:attr:`KubeApi.history`) gets a 410 ``Gone``
  (``Expired``) ``ERROR`` event;
- ``pods/<name>/log`` returns the container's text (``tailLines``), 400 when the pod
  has no such container started, 404 when the pod does not exist, 500 when the kubelet
  of its node cannot be reached (:meth:`KubeApi.lose_node`: the API server proxies logs
  from the kubelet, so a gone node's logs are gone with it);
- a container's termination state (the kubelet's): ``exitCode``, ``reason`` and, with
  ``terminationMessagePolicy: FallbackToLogsOnError`` and a failure (non-zero exit, no
  termination-log file here), ``message`` = the last 80 lines or 2048 bytes of its
  output, whichever is smaller (the Kubernetes "termination message" task page).

No scheduler or kubelet runs: the test plays them (:meth:`KubeApi.run_pod`,
:meth:`KubeApi.end_pod`, :meth:`KubeApi.write_log`). Every request body is kept in
:attr:`KubeApi.sent` so a test can inspect (and schema-validate) what a client sent.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx2

KINDS = {
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "configmaps": "ConfigMap",
    "leases": "Lease",
}
#: The API group and version each resource is served under ("v1": the core group, /api/v1).
GROUPS = {
    "pods": "v1",
    "persistentvolumeclaims": "v1",
    "configmaps": "v1",
    "leases": "coordination.k8s.io/v1",
}


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class ApiFailure(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


@dataclass
class Event:
    version: int
    type: str
    plural: str
    obj: dict[str, Any]


@dataclass
class KubeApi:
    """The store and its HTTP semantics (see the module's description)."""

    #: How many events are kept for watches (older versions get 410 Gone).
    history: int = 1000
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Pods whose node is unreachable: their logs cannot be read.
    lost: set[tuple[str, str]] = field(default_factory=set)
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    version: int = 0
    #: Events up to this version were compacted away (a watch from before it gets 410).
    compacted: int = 0
    #: Called once when the next watch starts (a test's hook, e.g. :meth:`compact`).
    before_next_watch: Callable[[], None] | None = None
    _changed: asyncio.Condition | None = None

    # -- the store ---------------------------------------------------------------------------

    def _bump(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append(Event(self.version, kind, plural, copy.deepcopy(obj)))
        if len(self.events) > self.history:
            self.compacted = self.events[-self.history - 1].version
            del self.events[: -self.history]
        if self._changed is not None:
            cond = self._changed

            async def notify() -> None:
                async with cond:
                    cond.notify_all()

            with contextlib_suppress():
                asyncio.get_running_loop().create_task(notify())

    def compact(self) -> None:
        """Forget every event so far (etcd's compaction): older watches get 410 Gone."""
        self.compacted = self.version
        self.events.clear()

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, ns, name))
        if obj is None:
            raise ApiFailure(
                status(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            )
        return obj

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name")
        if not name:
            raise ApiFailure(status(422, "Invalid", "metadata.name: Required value", kind=plural))
        if (plural, ns, name) in self.objects:
            raise ApiFailure(
                status(
                    409,
                    "AlreadyExists",
                    f'{plural} "{name}" already exists',
                    name=name,
                    kind=plural,
                )
            )
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if plural == "pods":
            obj["status"] = {"phase": "Pending"}
        self.objects[(plural, ns, name)] = obj
        self._bump("ADDED", plural, obj)
        return obj

    def replace(self, plural: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        old = self.get(plural, ns, name)
        given = body.get("metadata", {}).get("resourceVersion")
        if given is not None and given != old["metadata"]["resourceVersion"]:
            raise ApiFailure(
                status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    name=name,
                    kind=plural,
                )
            )
        obj = copy.deepcopy(body)
        obj["metadata"] = {**old["metadata"], **obj.get("metadata", {})}
        if plural == "pods":
            obj["status"] = old.get("status", {})
        self.objects[(plural, ns, name)] = obj
        self._bump("MODIFIED", plural, obj)
        return obj

    def delete(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, ns, name)
        del self.objects[(plural, ns, name)]
        self._bump("DELETED", plural, obj)
        self.logs.pop((ns, name), None)
        return obj

    def list(self, plural: str, ns: str, query: dict[str, str]) -> list[dict[str, Any]]:
        return [
            o
            for (p, n, _), o in sorted(self.objects.items())
            if p == plural and n == ns and _selected(o, query)
        ]

    # -- the kubelet's part, played by tests -------------------------------------------------

    def _set_status(self, ns: str, name: str, pod_status: dict[str, Any]) -> None:
        pod = self.get("pods", ns, name)
        pod["status"] = pod_status
        self._bump("MODIFIED", "pods", pod)

    def run_pod(self, ns: str, name: str, ip: str) -> None:
        self._set_status(
            ns,
            name,
            {
                "phase": "Running",
                "podIP": ip,
                "containerStatuses": [
                    {
                        "name": "runtime",
                        "ready": True,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "",
                        "state": {"running": {"startedAt": _now()}},
                    }
                ],
            },
        )
        self.logs.setdefault((ns, name), "")

    def end_pod(self, ns: str, name: str, exit_code: int, reason: str = "Error") -> None:
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
        runtime = self.get("pods", ns, name)["spec"]["containers"][0]
        policy = runtime.get("terminationMessagePolicy", "File")
        if policy == "FallbackToLogsOnError" and exit_code != 0:
            lines = self.logs.get((ns, name), "").splitlines(keepends=True)[-80:]
            tail = "".join(lines).encode()[-2048:].decode("utf-8", "replace")
            if tail:
                terminated["message"] = tail
        self._set_status(
            ns,
            name,
            {
                "phase": "Failed" if exit_code else "Succeeded",
                "containerStatuses": [
                    {
                        "name": "runtime",
                        "ready": False,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "",
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )

    def lose_node(self, ns: str, name: str) -> None:
        """The pod's node is gone: the API server cannot reach its kubelet for logs."""
        self.lost.add((ns, name))

    def write_log(self, ns: str, name: str, text: str) -> None:
        self.logs[(ns, name)] = self.logs.get((ns, name), "") + text

    # -- HTTP --------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | str]:
        found = _resource_path(path)
        if found is None:
            return 404, status(404, "NotFound", f"the server could not find {path}")
        ns, plural, rest = found
        try:
            if method == "POST" and not rest:
                doc = json.loads(body)
                self.sent.append((method, path, doc))
                return 201, self.create(plural, ns, doc)
            if method == "GET" and not rest:
                items = self.list(plural, ns, query)
                return 200, {
                    "kind": KINDS[plural] + "List",
                    "apiVersion": GROUPS[plural],
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            if method == "GET" and len(rest) == 1:
                return 200, self.get(plural, ns, rest[0])
            if method == "PUT" and len(rest) == 1:
                doc = json.loads(body)
                self.sent.append((method, path, doc))
                return 200, self.replace(plural, ns, rest[0], doc)
            if method == "DELETE" and len(rest) == 1:
                if body:
                    self.sent.append((method, path, json.loads(body)))
                return 200, self.delete(plural, ns, rest[0])
            if method == "GET" and plural == "pods" and len(rest) == 2 and rest[1] == "log":
                self.get(plural, ns, rest[0])
                if (ns, rest[0]) in self.lost:
                    return 500, status(
                        500, "InternalError", f"the kubelet of pod {rest[0]} cannot be reached"
                    )
                if (ns, rest[0]) not in self.logs:
                    return 400, status(
                        400, "BadRequest", f'container "runtime" in pod "{rest[0]}" is waiting'
                    )
                text = self.logs[(ns, rest[0])]
                if "tailLines" in query:
                    n = int(query["tailLines"])
                    text = "".join(text.splitlines(keepends=True)[-n:] if n else [])
                return 200, text
        except ApiFailure as exc:
            return exc.body["code"], exc.body
        return 405, status(405, "MethodNotAllowed", f"{method} {path} is not allowed")

    async def watch(
        self, plural: str, ns: str, query: dict[str, str]
    ) -> AsyncGenerator[bytes, None]:
        if self._changed is None:
            self._changed = asyncio.Condition()
        if self.before_next_watch is not None:
            hook, self.before_next_watch = self.before_next_watch, None
            hook()
        given = query.get("resourceVersion")
        if given is None or given in ("", "0"):
            for obj in self.list(plural, ns, query):
                yield _line("ADDED", obj)
            since = self.version
        else:
            since = int(given)
            if since < self.compacted:
                gone = status(
                    410, "Expired", f"too old resource version: {since} ({self.compacted})"
                )
                yield _line("ERROR", gone)
                return
        while True:
            for event in [e for e in self.events if e.version > since]:
                since = event.version
                if event.plural == plural and event.obj["metadata"]["namespace"] == ns:
                    if _selected(event.obj, query):
                        yield _line(event.type, event.obj)
            async with self._changed:
                await self._changed.wait()


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(RuntimeError)  # no running loop: nobody watches


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _selected(obj: dict[str, Any], query: dict[str, str]) -> bool:
    meta = obj["metadata"]
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if meta.get("labels", {}).get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        key, _, value = term.partition("=")
        field_value = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"]}
        if field_value.get(key) != value:
            return False
    return True


def _resource_path(path: str) -> tuple[str, str, list[str]] | None:
    """``(namespace, plural, rest)`` of a namespaced resource path, or ``None``."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"]:
        group, parts = "v1", parts[1:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, parts = f"{parts[1]}/{parts[2]}", parts[2:]
    else:
        return None
    if parts[:2] != ["v1", "namespaces"] or len(parts) < 4 or GROUPS.get(parts[3]) != group:
        return None
    return parts[2], parts[3], parts[4:]


def _query(request: httpx2.Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}


def _response(code: int, payload: dict[str, Any] | str, request: httpx2.Request) -> httpx2.Response:
    if isinstance(payload, str):
        return httpx2.Response(
            code, text=payload, headers={"Content-Type": "text/plain"}, request=request
        )
    return httpx2.Response(
        code,
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        request=request,
    )


class _Stream(httpx2.AsyncByteStream):
    def __init__(self, source: AsyncGenerator[bytes, None]) -> None:
        self._source = source

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._source:
            yield chunk

    async def aclose(self) -> None:
        await self._source.aclose()


class AsyncTransport(httpx2.AsyncBaseTransport):
    """Serves a :class:`KubeApi` to lightkube's async client."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        #: A network partition between this client and the API server: every request
        #: fails to connect (as a dropped route would) while it is set.
        self.partitioned = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.partitioned:
            raise httpx2.ConnectError("the API server is unreachable (partition)", request=request)
        query = _query(request)
        body = await request.aread()
        found = _resource_path(request.url.path)
        watch = query.get("watch") in ("true", "1")
        if request.method == "GET" and watch and found is not None and not found[2]:
            return httpx2.Response(
                200,
                headers={"Content-Type": "application/json"},
                stream=_Stream(self.api.watch(found[1], found[0], query)),
                request=request,
            )
        code, payload = self.api.handle(request.method, request.url.path, query, body)
        return _response(code, payload, request)


class SyncTransport(httpx2.BaseTransport):
    """Serves a :class:`KubeApi` to lightkube's synchronous client (no watches)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        code, payload = self.api.handle(
            request.method, request.url.path, _query(request), request.read()
        )
        return _response(code, payload, request)
