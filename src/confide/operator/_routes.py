"""The router's route table, kept by the supervisor from what actually runs.

The supervisor calls :meth:`AppRoutes.publish` whenever an app's runtime or
status changes and :meth:`AppRoutes.withdraw` when it stops; the router asks
:meth:`AppRoutes.lookup` once per connection. Both run on the same event loop,
so no lock is needed.

Names and modes:

- ``<app-id>.<base-domain>`` (the UUID exactly as the API prints it) and, for
  owner-certificate apps, the owner's domain;
- RA-TLS and owner modes: always **passthrough** (the operator never holds a key);
- operator mode (``--untrusted-ssl``): **passthrough** until the app runs, since
  its configuration endpoint is RA-TLS and must reach the owner's CLI
  unterminated; **terminate** once it runs (plain HTTP behind the router).

An owner's domain is refused (never routed) when it lies under the base
domain (it would shadow another app's name) or when another app already
holds it; the first app to publish a domain keeps it until withdrawn. A
refusal is logged once, when it starts (or its reason changes), not at each
of the supervisor's publications while it lasts.
Unknown names get ``None`` (the router closes the connection).

Replicas (ADR 0023): with several operator replicas, only one runs the supervisor
(elected with a Kubernetes Lease, :mod:`._election`), and every replica's router
routes from the shared database instead: :class:`DatabaseRoutes` reads the apps
table (each app's status, TLS mode, domain and runtime address, which the
supervisor writes before it publishes) every :data:`ROUTE_REFRESH` seconds into an
:class:`AppRoutes` of its own. A route is then at most one refresh (plus the read)
behind the database; a router that could not read the database for
:data:`MAX_ROUTE_STALENESS` seconds routes nothing until it can (fail closed: it
would otherwise keep sending connections to addresses that may since belong to
another app's runtime). Such routes never hand connections off (a hand-off socket is
local to the supervisor's host): they relay.

Example::

    >>> routes = AppRoutes("apps.example")
    >>> app_id = uuid.UUID(int=1)
    >>> routes.publish(app_id, TlsMode.RATLS, None, "127.0.0.1", 40123, running=False)
    >>> routes.lookup(f"{app_id}.apps.example").mode
    <RouteMode.PASSTHROUGH: 'passthrough'>
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from confide.errors import Error, UsageError
from confide.wire import AppStatus, DesiredState, TlsMode

from ._db import Database
from ._models import App
from ._router import Route, RouteMode

#: How often each replica's router reads the routes from the database. Seconds.
ROUTE_REFRESH: Final = 1.0
#: How long the supervisor waits, once it has cleared a runtime's address in the
#: database, before it stops the runtime (``SupervisorOptions.route_drain``): a refresh
#: and a read, so no router still routes to the address when it is freed. Seconds.
ROUTE_DRAIN: Final = 2 * ROUTE_REFRESH
#: A router whose last good read started longer ago than this routes nothing. Seconds.
MAX_ROUTE_STALENESS: Final = 10.0
#: Most apps routed by one replica (more are left unrouted, and said so).
MAX_ROUTED_APPS: Final = 100_000
#: The statuses in which the supervisor routes an app whose runtime is up.
_ROUTED: Final = (AppStatus.SPAWNING.value, AppStatus.INITIALIZING.value, AppStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    domain: str | None


class AppRoutes:
    """A :class:`~._router.RouteTable` of the apps whose runtime is up."""

    def __init__(self, base_domain: str, *, logger: logging.Logger | None = None) -> None:
        self._base = base_domain.lower().rstrip(".")
        self._suffix = "." + self._base
        self._apps: dict[uuid.UUID, _Entry] = {}
        self._domains: dict[str, uuid.UUID] = {}
        #: The refusal last logged for each app: its domain, and the holder (None: base domain).
        self._refused: dict[uuid.UUID, tuple[str, uuid.UUID | None]] = {}
        self._log = logger or logging.getLogger("confide.operator.routes")

    def name_of(self, app_id: uuid.UUID) -> str:
        """The app's own name, ``<app-id>.<base-domain>``."""
        return f"{app_id}{self._suffix}"

    def publish(
        self,
        app_id: uuid.UUID,
        tls: TlsMode,
        domain: str | None,
        host: str,
        port: int,
        *,
        running: bool,
        handoff: Path | None = None,
    ) -> None:
        """Route the app's names to its runtime at ``host:port`` (replacing any older route).

        ``handoff``: the runtime's hand-off socket; passthrough routes then pass
        the client's connection itself to the runtime (terminate routes relay).
        """
        terminate = tls == TlsMode.OPERATOR and running
        if terminate:
            route = Route(RouteMode.TERMINATE, host, port)
        else:
            route = Route(RouteMode.PASSTHROUGH, host, port, handoff=handoff)
        owned = None
        if domain is not None and tls == TlsMode.OWNER:
            owned = self._claim(app_id, domain.lower().rstrip("."))
        previous = self._apps.get(app_id)
        if previous is not None and previous.domain not in (None, owned):
            self._domains.pop(previous.domain, None)  # pragma: no cover - domains do not change
        self._apps[app_id] = _Entry(route, owned)

    def _claim(self, app_id: uuid.UUID, domain: str) -> str | None:
        if domain == self._base or domain.endswith(self._suffix):
            if self._refuse(app_id, domain, None):
                self._log.warning(
                    "app %s: its domain %s is under the base domain; not routed", app_id, domain
                )
            return None
        holder = self._domains.setdefault(domain, app_id)
        if holder != app_id:
            if self._refuse(app_id, domain, holder):
                self._log.warning(
                    "app %s: its domain %s is already routed to app %s; not routed",
                    app_id,
                    domain,
                    holder,
                )
            return None
        self._refused.pop(app_id, None)
        return domain

    def _refuse(self, app_id: uuid.UUID, domain: str, holder: uuid.UUID | None) -> bool:
        """Remember a refusal; whether it is new (and so to be logged)."""
        new = self._refused.get(app_id) != (domain, holder)
        self._refused[app_id] = (domain, holder)
        return new

    def withdraw(self, app_id: uuid.UUID) -> None:
        """Stop routing the app's names."""
        self._refused.pop(app_id, None)
        entry = self._apps.pop(app_id, None)
        if entry is not None and entry.domain is not None:
            if self._domains.get(entry.domain) == app_id:
                del self._domains[entry.domain]

    def lookup(self, server_name: str) -> Route | None:
        name = server_name.lower().rstrip(".")
        if name.endswith(self._suffix):
            label = name[: -len(self._suffix)]
            try:
                app_id = uuid.UUID(label)
            except ValueError:
                return None
            if str(app_id) != label:
                return None  # only the canonical spelling of the UUID
        else:
            found = self._domains.get(name)
            if found is None:
                return None
            app_id = found
        entry = self._apps.get(app_id)
        return entry.route if entry is not None else None

    def apps(self) -> list[uuid.UUID]:
        """The apps routed now."""
        return list(self._apps)

    def routes(self) -> dict[str, Route]:
        """Every routed name and its route (for tests and diagnostics)."""
        out = {self.name_of(app_id): entry.route for app_id, entry in self._apps.items()}
        for domain, app_id in self._domains.items():
            if app_id in self._apps:
                out[domain] = self._apps[app_id].route
        return out


@dataclass(frozen=True, slots=True)
class RouteRow:
    """What a router reads of one app whose runtime is up (see :func:`read_route_rows`)."""

    app_id: uuid.UUID
    tls: TlsMode
    domain: str | None
    host: str
    port: int
    running: bool


def read_route_rows(database: Database) -> list[RouteRow]:
    """The apps to route, oldest first: active, asked to run, with a runtime address.

    The order (creation time, then id) is the same on every replica (the database
    keeps owners' domains unique, so no two rows claim one).
    """
    with database.session() as session:
        query = (
            select(App.id, App.tls, App.domain, App.runtime_host, App.runtime_port, App.status)
            .where(
                App.status.in_(_ROUTED),
                App.desired_state == DesiredState.RUN.value,
                App.delete_requested.is_(False),
                App.runtime_host.is_not(None),
                App.runtime_port.is_not(None),
            )
            .order_by(App.created_at, App.id)
            .limit(MAX_ROUTED_APPS + 1)
        )
        rows = []
        for app_id, tls, domain, host, port, status in session.execute(query):
            if host is None or port is None:  # pragma: no cover - filtered by the query
                continue
            try:
                mode = TlsMode(tls)
            except ValueError:
                continue  # not an app this operator could have started
            rows.append(RouteRow(app_id, mode, domain, host, port, status == "running"))
        return rows


class DatabaseRoutes:
    """A :class:`~._router.RouteTable` read from the database by each replica (ADR 0023).

    :meth:`apply` (pure: ``now`` is a monotonic reading) makes the table what the rows
    say; :meth:`run` reads them every ``interval`` seconds; :meth:`lookup` answers
    ``None`` for every name once the last good read started more than ``max_staleness``
    seconds ago (``monotonic`` is the clock it asks).
    """

    def __init__(
        self,
        database: Database,
        base_domain: str,
        *,
        interval: float = ROUTE_REFRESH,
        max_staleness: float = MAX_ROUTE_STALENESS,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < interval < max_staleness:
            raise UsageError("the route refresh must be positive and under the staleness bound")
        self._db = database
        self._table = AppRoutes(base_domain, logger=logger)
        self.interval = interval
        self.max_staleness = max_staleness
        self._monotonic = monotonic
        self._log = logger or logging.getLogger("confide.operator.routes")
        #: When the last good read started (None: never).
        self._fresh_at: float | None = None
        self._failing = False

    def apply(self, rows: Iterable[RouteRow], *, now: float) -> None:
        """Route exactly ``rows`` (read at ``now``): new and changed routes, withdrawals."""
        wanted: dict[uuid.UUID, RouteRow] = {}
        for row in rows:
            if len(wanted) == MAX_ROUTED_APPS:
                self._log.warning("more than %d apps to route: the rest are not", MAX_ROUTED_APPS)
                break
            wanted[row.app_id] = row
        for app_id in [a for a in self._table.apps() if a not in wanted]:
            self._table.withdraw(app_id)
        for row in wanted.values():
            try:
                self._table.publish(
                    row.app_id, row.tls, row.domain, row.host, row.port, running=row.running
                )
            except Error as exc:  # an address no route can hold: not routed
                self._table.withdraw(row.app_id)
                self._log.warning("app %s: not routed: %s", row.app_id, exc.message)
        self._fresh_at = now

    def fresh(self, now: float) -> bool:
        """Whether the table may be used at ``now`` (its last read is recent enough)."""
        return self._fresh_at is not None and now - self._fresh_at <= self.max_staleness

    def lookup(self, server_name: str) -> Route | None:
        if not self.fresh(self._monotonic()):
            return None
        return self._table.lookup(server_name)

    def routes(self) -> dict[str, Route]:
        """Every routed name and its route (for tests and diagnostics)."""
        return self._table.routes() if self.fresh(self._monotonic()) else {}

    async def refresh(self) -> None:
        """Read the routes once (in a worker thread) and apply them."""
        started = self._monotonic()
        rows = await asyncio.to_thread(read_route_rows, self._db)
        self.apply(rows, now=started)

    async def run(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        """Refresh every ``interval`` seconds until ``shutdown_trigger()`` returns."""
        stopping = asyncio.ensure_future(shutdown_trigger())
        try:
            while not stopping.done():
                try:
                    await self.refresh()
                except (SQLAlchemyError, OSError) as exc:
                    if not self._failing:
                        self._log.warning(
                            "cannot read the routes from the database (%s); routing nothing "
                            "after %g s without a read",
                            exc.__class__.__name__,
                            self.max_staleness,
                        )
                    self._failing = True
                else:
                    if self._failing:
                        self._log.info("the routes are read from the database again")
                    self._failing = False
                await asyncio.wait({stopping}, timeout=self.interval)
        finally:
            stopping.cancel()
