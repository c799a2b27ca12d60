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

Example::

    >>> routes = AppRoutes("apps.example")
    >>> app_id = uuid.UUID(int=1)
    >>> routes.publish(app_id, TlsMode.RATLS, None, "127.0.0.1", 40123, running=False)
    >>> routes.lookup(f"{app_id}.apps.example").mode
    <RouteMode.PASSTHROUGH: 'passthrough'>
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from confide.wire import TlsMode

from ._router import Route, RouteMode


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

    def routes(self) -> dict[str, Route]:
        """Every routed name and its route (for tests and diagnostics)."""
        out = {self.name_of(app_id): entry.route for app_id, entry in self._apps.items()}
        for domain, app_id in self._domains.items():
            if app_id in self._apps:
                out[domain] = self._apps[app_id].route
        return out
