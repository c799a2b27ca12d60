"""A real operator API server per test, on SQLite and on PostgreSQL, called over HTTP.

The server is hypercorn serving :func:`confide.operator.create_app` in a thread
of its own, on a socket bound to 127.0.0.1 port 0 before it starts (so the
port is known and connections queue until it is ready: no sleeps). It
migrates its empty database at startup, as in production.

The PostgreSQL cases need ``CONFIDE_TEST_POSTGRES_URL`` (``make test`` sets
it); without it they fail, saying so. The fixtures (``operators``, ``operator``,
``app_dir``, ``package``) are in ``tests/integration/operator_api/conftest.py``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from confide.operator import (
    Database,
    OperatorSettings,
    create_app,
    create_token,
    serve_api,
)
from confide.runtime import bind_listener
from support.certs import self_signed_pem
from support.database import dump

RUNTIME_SHA256 = bytes(range(32))
#: The operator's clock in these tests (the server's time is injected).
START = datetime(2030, 1, 1, tzinfo=UTC)
EXPIRES = "2030-03-01T00:00:00Z"
SIM_ROOT_PEM = b"-----BEGIN CERTIFICATE-----\nc2ltdWxhdGlvbiByb290\n-----END CERTIFICATE-----\n"


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


class FakeClock:
    """The server's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RecordingEvents:
    """An :class:`AppEvents` that remembers what it was told."""

    notified: list[uuid.UUID] = field(default_factory=list)

    def notify(self, app_id: uuid.UUID) -> None:
        self.notified.append(app_id)


class StaticCa:
    def certificate_pem(self) -> bytes:
        return b"-----BEGIN CERTIFICATE-----\nb3BlcmF0b3IgY2E=\n-----END CERTIFICATE-----\n"


@dataclass
class Operator:
    """A running operator API and what it was built from."""

    url: str
    settings: OperatorSettings
    database: Database
    clock: FakeClock
    events: RecordingEvents

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        # One shared (verifying) TLS context: building one per client costs 50 ms.
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=_tls())

    def token(self, account: str) -> str:
        with self.database.session() as s:
            issued = create_token(s, account, now=self.clock())
            s.commit()
        return issued.token

    def dump(self) -> str:
        """Every row of every table, as text."""
        return dump(self.database)

    def blob_files(self) -> list[Path]:
        root = self.settings.blobs_dir
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@dataclass
class OperatorFactory:
    """Starts operators; stops them all at the end of the test."""

    tmp_path: Path
    database_url: str
    _stops: list[Callable[[], None]] = field(default_factory=list)
    _shared: tuple[Operator, str] | None = None

    def start(self, **options: Any) -> Operator:
        overrides = {
            k: options.pop(k)
            for k in list(options)
            if k in ("max_package_size", "max_apps_per_account", "tee", "base_domain", "kubernetes")
        }
        settings = OperatorSettings.load(
            self.tmp_path / "data",
            runtime_sha256=RUNTIME_SHA256,
            database_url=self.database_url,
            base_domain=overrides.pop("base_domain", "confide.test"),
            router_port=9443,
            **overrides,
        )
        database = Database.open(settings.database_url)
        clock = FakeClock(START)
        events = RecordingEvents()
        options.setdefault("sim_root_provider", lambda: SIM_ROOT_PEM)
        app = create_app(
            settings,
            database=database,
            events=events,
            clock=clock,
            log_poll_interval=0.02,
            **options,
        )
        sock = bind_listener("127.0.0.1", 0, backlog=1024, role="API")
        port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                loop.run_until_complete(serve_api(app, settings, stop.wait, sock=sock))
            except BaseException as exc:  # reported by the test, not lost in the thread
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"operator-{port}", daemon=True)
        thread.start()
        operator = Operator(f"http://127.0.0.1:{port}", settings, database, clock, events)

        def shutdown() -> None:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
            assert not thread.is_alive(), "the operator did not stop"
            loop.close()
            sock.close()
            database.dispose()
            if failure:
                raise failure[0]

        self._stops.append(shutdown)
        with operator.client() as c:  # waits until the server is up (and migrated)
            assert c.get("/api/v1/health").status_code == 200
        return operator

    def shared(self, **options: Any) -> tuple[Operator, str]:
        """One operator (and a token) kept for the whole test: hypothesis examples share it."""
        if self._shared is None:
            operator = self.start(**options)
            self._shared = (operator, operator.token("shared"))
        return self._shared

    def close(self) -> None:
        while self._stops:
            self._stops.pop()()


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "hello",
        "project": "demo",
        "application": "app:app",
        "plan": "small",
        "expires_at": EXPIRES,
        "tls": "ratls",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def upload(
    client: httpx.Client, package: bytes, doc: dict[str, Any] | str | None = None
) -> httpx.Response:
    """``POST /api/v1/apps`` with a package and a manifest."""
    raw = doc if isinstance(doc, str) else json.dumps(doc if doc is not None else manifest())
    return client.post(
        "/api/v1/apps",
        files={"package": ("app.pkg", package, "application/octet-stream")},
        data={"manifest": raw},
    )


def certificate(
    names: list[str], *, not_after: datetime = START + timedelta(days=365), with_key: bool = False
) -> str:
    """A self-signed certificate for ``names`` (PEM), optionally followed by its key."""
    return self_signed_pem(
        names, not_before=START - timedelta(days=1), not_after=not_after, with_key=with_key
    )
