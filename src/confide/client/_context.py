"""An app's context: what a user needs to find and verify a deployed app, in one file.

``confide deploy`` saves it, ``confide context --export APP_ID`` writes it for
an app already running, ``confide verify`` reads it. It holds only public
facts (never a token, a key or a secret), so an owner can hand it to users.

Format, version 1 (JSON, UTF-8)::

    {"format": "confide-app-context",
     "version": 1,
     "app_id": "<uuid>",
     "name": "<app name>",
     "project": "<project name>",
     "operator_url": "https://operator.example",
     "domains": ["<app-id>.<base domain>", "<owner's domain>"],
     "router": {"host": "<host>", "port": <port>},
     "tls": "ratls" | "owner" | "operator",
     "tee": "sgx" | "tdx" | "simulation" | ...,
     "expires_at": "<ISO 8601 with offset>",
     "launch": {<the launch manifest, confide.wire.LaunchManifest.to_dict()>},
     "fingerprint": "<hex measurement of launch>",
     "gramine_mrenclave": "<hex>"}        optional: a Gramine enclave's predicted MRENCLAVE

``fingerprint`` is redundant (the SHA-256 measurement of ``launch``, or
``gramine_mrenclave`` when present); it is there for people and scripts, and a
file where it disagrees is refused, as are unknown formats, versions and
fields. ``gramine_mrenclave`` is what ``confide deploy`` predicted with
Gramine's signer for an operator launching with Gramine (ADR 0018): it cannot
be recomputed from ``launch`` alone, so it is the owner's word, like the rest of
the file a user receives from the owner.

Example::

    >>> ctx = AppContext.from_record(client.get_app(app_id), client.base_url)  # doctest: +SKIP
    >>> ctx.save(Path("hello.context.json"))  # doctest: +SKIP
    >>> AppContext.load(Path("hello.context.json")).fingerprint.hex()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confide import strictjson
from confide.errors import JsonError, UsageError
from confide.runtime import write_atomically
from confide.wire import HostPort, LaunchManifest, TlsMode

from ._api import normalize_url

if TYPE_CHECKING:  # the API bodies are imported when used (they slow the CLI's start)
    from confide.wire.api import AppRecord

CONTEXT_FORMAT: Final = "confide-app-context"
CONTEXT_VERSION: Final = 1
#: Largest context file read.
MAX_CONTEXT_SIZE: Final = 256 * 1024
_MAX_DOMAINS: Final = 64
_FIELDS: Final = frozenset(
    {
        "format",
        "version",
        "app_id",
        "name",
        "project",
        "operator_url",
        "domains",
        "router",
        "tls",
        "tee",
        "expires_at",
        "launch",
        "fingerprint",
    }
)
#: Fields a context may leave out.
_OPTIONAL_FIELDS: Final = frozenset({"code_sha256", "gramine_mrenclave"})


@dataclass(frozen=True, slots=True)
class AppContext:
    """Where an app is and what it must prove (see the module's description)."""

    app_id: uuid.UUID
    name: str
    project: str
    operator_url: str
    #: ``<id>.<base domain>``, then the owner's domain.
    domains: tuple[str, ...]
    router: HostPort
    tls: TlsMode
    tee: str
    expires_at: datetime
    #: The launch inputs; their measurement is what the enclave's quote must carry.
    launch: LaunchManifest
    #: SHA-256 of the deterministic archive of the plaintext code folder, written by
    #: ``confide deploy`` so that ``confide verify --context --code DIR`` can check that
    #: DIR is the code the owner encrypted into the measured package; ``None`` in a
    #: context exported from the operator, which never sees the plaintext.
    code_sha256: bytes | None = None
    #: A Gramine enclave's MRENCLAVE, as ``confide deploy`` predicted it (ADR 0018).
    gramine_mrenclave: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "operator_url", normalize_url(self.operator_url))
        if self.launch.app_id != self.app_id:
            raise UsageError(
                f"the launch manifest is for app {self.launch.app_id}, not app {self.app_id}"
            )
        if not 0 < len(self.domains) <= _MAX_DOMAINS or not all(
            isinstance(d, str) and 0 < len(d) <= 253 for d in self.domains
        ):
            raise UsageError(f"an app has 1 to {_MAX_DOMAINS} domains of 1 to 253 characters")
        if not 0 < self.router.port < 65536 or not self.router.host:
            raise UsageError(f"the router address {self.router} is not host:port")
        if self.expires_at.tzinfo is None:
            raise UsageError("expires_at must be a timezone-aware datetime")
        if self.code_sha256 is not None and len(self.code_sha256) != 32:
            raise UsageError("code_sha256 must be 32 bytes")
        if self.gramine_mrenclave is not None and len(self.gramine_mrenclave) != 32:
            raise UsageError("gramine_mrenclave must be 32 bytes")

    @property
    def fingerprint(self) -> bytes:
        """The expected MRENCLAVE: the Gramine prediction, else the measurement of
        :attr:`launch`."""
        return self.gramine_mrenclave or self.launch.measurement()

    @classmethod
    def from_record(cls, record: AppRecord, operator_url: str) -> AppContext:
        """The context of an app the operator described (``OperatorClient.get_app``)."""
        return cls(
            app_id=record.id,
            name=record.name,
            project=record.project,
            operator_url=operator_url,
            domains=record.domains,
            router=record.router,
            tls=record.tls,
            tee=record.tee,
            expires_at=record.expires_at,
            launch=record.launch,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONTEXT_FORMAT,
            "version": CONTEXT_VERSION,
            "app_id": str(self.app_id),
            "name": self.name,
            "project": self.project,
            "operator_url": self.operator_url,
            "domains": list(self.domains),
            "router": {"host": self.router.host, "port": self.router.port},
            "tls": self.tls.value,
            "tee": self.tee,
            "expires_at": self.expires_at.isoformat(),
            "launch": self.launch.to_dict(),
            "fingerprint": self.fingerprint.hex(),
            **({"code_sha256": self.code_sha256.hex()} if self.code_sha256 is not None else {}),
            **(
                {"gramine_mrenclave": self.gramine_mrenclave.hex()}
                if self.gramine_mrenclave is not None
                else {}
            ),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: str | bytes) -> AppContext:
        """Parse :meth:`to_json`'s output; anything else raises :class:`UsageError`."""
        if len(data) > MAX_CONTEXT_SIZE:
            raise UsageError(f"an app context is at most {MAX_CONTEXT_SIZE} bytes")
        try:
            doc = strictjson.loads(data, what="the app context", max_bytes=MAX_CONTEXT_SIZE)
        except JsonError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(doc, dict) or doc.get("format") != CONTEXT_FORMAT:
            raise UsageError("not a Confide app context")
        if doc.get("version") != CONTEXT_VERSION:
            raise UsageError(
                f"app context version {doc.get('version')!r} is not supported "
                f"(this Confide reads version {CONTEXT_VERSION}); upgrade Confide"
            )
        unknown = set(doc) - _FIELDS - _OPTIONAL_FIELDS
        missing = _FIELDS - set(doc)
        if unknown or missing:
            names = ", ".join(sorted(unknown or missing))
            raise UsageError(
                f"the app context has fields this version does not know: {names}"
                if unknown
                else f"the app context lacks {names}"
            )
        try:
            router = doc["router"]
            if not isinstance(router, dict) or set(router) != {"host", "port"}:
                raise ValueError("router must be {host, port}")
            host, port = router["host"], router["port"]
            if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
                raise ValueError("router must be {host: string, port: integer}")
            domains = doc["domains"]
            if not isinstance(domains, list):
                raise ValueError("domains must be a list")
            texts = {k: doc[k] for k in ("app_id", "name", "project", "operator_url", "tee")}
            for key in ("expires_at", "fingerprint", "tls", *texts):
                if not isinstance(doc[key], str):
                    raise ValueError(f"{key} must be a string")
            expires_at = datetime.fromisoformat(doc["expires_at"])
            code = doc.get("code_sha256")
            if code is not None and not isinstance(code, str):
                raise ValueError("code_sha256 must be a hex string")
            gramine = doc.get("gramine_mrenclave")
            if gramine is not None and not isinstance(gramine, str):
                raise ValueError("gramine_mrenclave must be a hex string")
            context = cls(
                app_id=uuid.UUID(doc["app_id"]),
                name=doc["name"],
                project=doc["project"],
                operator_url=doc["operator_url"],
                domains=tuple(domains),
                router=HostPort(host, port),
                tls=TlsMode(doc["tls"]),
                tee=doc["tee"],
                expires_at=expires_at,
                launch=LaunchManifest.from_json(json.dumps(doc["launch"])),
                code_sha256=bytes.fromhex(code) if code is not None else None,
                gramine_mrenclave=bytes.fromhex(gramine) if gramine is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"the app context is malformed: {exc}") from None
        if doc["fingerprint"] != context.fingerprint.hex():
            raise UsageError(
                f"the app context's fingerprint {doc['fingerprint']} is not the measurement "
                f"of its launch manifest nor its gramine_mrenclave "
                f"({context.fingerprint.hex()}): the file was altered"
            )
        return context

    def save(self, path: Path) -> None:
        """Write the file atomically (readable by all: it holds nothing secret)."""
        try:
            write_atomically(path, self.to_json().encode(), mode=0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot write the app context {path}: {exc.strerror or exc}"
            ) from None

    @classmethod
    def load(cls, path: Path) -> AppContext:
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_CONTEXT_SIZE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the app context {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(raw)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None
