"""The life of an app, as data: its moves between statuses, and the only writes of them.

:data:`TRANSITIONS` is the whole state diagram; :func:`record_created`,
:func:`record_status`, :func:`request_stop` and :func:`request_delete` are the
only code that writes an app's ``status``, ``desired_state`` or
``delete_requested`` (the API, the supervisor and the tests call them). A
status change the table does not hold raises :class:`~confide.errors.LifecycleError`:
a bug, never an answer to a client. Every change is kept in the app's history
(``app_status_changes``), from which the metrics compute status durations.

The diagram, one line per row of :data:`TRANSITIONS` (a test holds them equal)::

    new          ──▶ spawning      the owner created it (the API)
    spawning     ──▶ spawning      (re)started: it crashed, was gone after an operator restart,
    initializing ──▶ spawning        or the operator stopped with it
    running      ──▶ spawning
    spawning     ──▶ initializing  its configuration endpoint answers GET / "waiting"
    running      ──▶ initializing  an adopted runtime answers "waiting" again
    spawning     ──▶ running       the app's healthcheck passes
    initializing ──▶ running
    spawning     ──▶ stopped       desired_state stop (or deletion requested), or never
    initializing ──▶ stopped         running within the plan's configure_timeout of its
    running      ──▶ stopped         creation (the deploy died)
    spawning     ──▶ expired       past the earlier of expires_at and the measured RA-TLS
    initializing ──▶ expired         expiry; the runtime is stopped
    running      ──▶ expired
    spawning     ──▶ on_error      cannot be launched as stored, its app cannot be imported
    initializing ──▶ on_error        (a missing module or attribute: at once), or its runtime
    running      ──▶ on_error        ended MAX_RESTARTS + 1 times in a row before it ever
                                     answered (else a runtime that answered is restarted)
    stopped      ──▶ deleted       deletion requested: at once by the API when not active,
    on_error     ──▶ deleted         else by the supervisor once it stopped
    expired      ──▶ deleted

``deleted`` is final, and an app that left the active statuses (spawning,
initializing, running) never comes back to them.

Example::

    >>> with database.session() as session:  # doctest: +SKIP
    ...     app = session.get(App, app_id)
    ...     record_status(session, app, AppStatus.RUNNING, now=now)
    ...     session.commit()
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from sqlalchemy.orm import Session

from confide.errors import LifecycleError
from confide.wire import AppStatus, DesiredState

from ._models import App, AppStatusChange

_ACTIVE: Final = frozenset(s for s in AppStatus if s.active)
_SPAWNING, _INITIALIZING, _RUNNING = AppStatus.SPAWNING, AppStatus.INITIALIZING, AppStatus.RUNNING
#: Where an active app may end (it never comes back from there).
_ENDS: Final = frozenset({AppStatus.STOPPED, AppStatus.EXPIRED, AppStatus.ON_ERROR})
_DELETED: Final = frozenset({AppStatus.DELETED})

#: Every status an app may move to from each status (``None``: a new app).
TRANSITIONS: Final[Mapping[AppStatus | None, frozenset[AppStatus]]] = {
    None: frozenset({_SPAWNING}),
    _SPAWNING: frozenset({_SPAWNING, _INITIALIZING, _RUNNING}) | _ENDS,
    _INITIALIZING: frozenset({_SPAWNING, _RUNNING}) | _ENDS,
    _RUNNING: frozenset({_SPAWNING, _INITIALIZING}) | _ENDS,
    AppStatus.STOPPED: _DELETED,
    AppStatus.ON_ERROR: _DELETED,
    AppStatus.EXPIRED: _DELETED,
    AppStatus.DELETED: frozenset(),
}


def _current(app: App) -> AppStatus | None:
    return None if app.status is None else AppStatus(app.status)


def _check(app: App, status: AppStatus) -> None:
    current = _current(app)
    if status not in TRANSITIONS[current]:
        raise LifecycleError(
            f"app {app.id}: no transition from {current.value if current else 'new'} "
            f"to {status.value} in its lifecycle"
        )


def _write(
    session: Session, app: App, status: AppStatus, now: datetime, detail: str | None
) -> None:
    app.status = status.value
    app.status_detail = detail
    app.updated_at = now
    session.add(AppStatusChange(app_id=app.id, status=status.value, detail=detail, at=now))


def record_status(
    session: Session,
    app: App,
    status: AppStatus,
    *,
    now: datetime,
    detail: str | None = None,
) -> None:
    """Move ``app`` to ``status`` and keep the change in its history. The caller commits.

    Raises :class:`LifecycleError` when :data:`TRANSITIONS` has no such move.
    """
    _check(app, status)
    _write(session, app, status, now, detail)


def record_created(session: Session, app: App, *, now: datetime) -> None:
    """Insert a new app (no status yet): spawning, to run, no deletion asked. The caller commits.

    The row is flushed before its history: an ``IntegrityError`` (a unique index)
    reaches the caller with nothing else written.
    """
    _check(app, AppStatus.SPAWNING)
    app.status = AppStatus.SPAWNING.value
    app.desired_state = DesiredState.RUN.value
    app.delete_requested = False
    session.add(app)
    session.flush()
    _write(session, app, AppStatus.SPAWNING, now, None)


def request_stop(app: App, *, now: datetime) -> None:
    """The owner asks for the app to stop (the supervisor carries it out). The caller commits."""
    app.desired_state = DesiredState.STOP.value
    app.updated_at = now


def request_delete(session: Session, app: App, *, now: datetime) -> None:
    """The owner asks for the app to stop and be deleted: deleted at once unless active."""
    request_stop(app, now=now)
    app.delete_requested = True
    if AppStatus(app.status) not in _ACTIVE:
        record_status(session, app, AppStatus.DELETED, now=now, detail="deleted by owner")
