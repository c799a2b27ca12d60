"""What the API needs from the rest of the operator, as small protocols.

The API never starts or stops processes: it writes the database and calls
:meth:`AppEvents.notify`. The backend (supervisor) implements the protocols
below and is handed to :func:`~confide.operator.create_app` at the entry point;
the defaults here let the API run alone (tests, or a read-only operator).

Supervisor contract: it converges on the rows the API writes, moving each app
through the transition table of :mod:`._lifecycle` (whose functions are the
only writers of status, desired state and deletion, with the history the
metrics read); it sets ``started_at`` on reaching ``running``, counts
``restarts``, fills in ``runtime_host/port/pid``, and sends the runtime's
output to :meth:`~._logs.LogSource.log_path`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

#: The current time, timezone-aware. Injected so tests can move it.
Clock = Callable[[], datetime]

#: Returns the PEM of the operator's simulation root CA (simulated TEE only): what a
#: client passes as the trust anchor to verify a simulated quote.
SimulationRootProvider = Callable[[], bytes]
#: Returns collateral (dcap-qvl ``QuoteCollateralV3`` JSON text) for the simulated TEE's
#: quotes, issued for the given time: with the simulation root, what anyone needs to
#: verify the operator's simulated quotes.
SimulationCollateralProvider = Callable[[datetime], str]


def utc_now() -> datetime:
    """The default :data:`Clock`."""
    return datetime.now(UTC)


@runtime_checkable
class AppEvents(Protocol):
    """Told after every change the API commits to an app (create, stop, delete).

    Called from a worker thread, after the commit: it must be thread-safe and
    return at once (e.g. ``loop.call_soon_threadsafe(wake.set)``). The
    database stays the source of truth; a missed call only delays the supervisor.
    """

    def notify(self, app_id: uuid.UUID) -> None: ...


class NoEvents:
    """The default :class:`AppEvents`: nobody listens (the supervisor polls)."""

    def notify(self, app_id: uuid.UUID) -> None:
        return None


@runtime_checkable
class MetricsSource(Protocol):
    """Numbers only the backend knows about a running app (memory, CPU seconds, ...).

    Returned under ``runtime`` by the metrics endpoint; status durations,
    restarts and uptime come from the database.
    """

    def runtime_metrics(self, app_id: uuid.UUID) -> Mapping[str, float]: ...


class NoMetrics:
    """The default :class:`MetricsSource`: no runtime numbers."""

    def runtime_metrics(self, app_id: uuid.UUID) -> Mapping[str, float]:
        return {}


@runtime_checkable
class CertificateAuthority(Protocol):
    """The operator's CA (the router's ``_ca.py``): its certificate, PEM."""

    def certificate_pem(self) -> bytes: ...
