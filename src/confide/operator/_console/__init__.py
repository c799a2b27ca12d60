"""The operator console: a web UI at ``/console/`` on the operator's API listener (ADR 0025).

Sign in with an API token (exchanged for a session cookie), then see the account's
apps, an app's status history, launch manifest, fingerprint and live log, stop and
delete apps (each with a confirmation step), projects and plans, and the account's
API tokens (create, shown once; revoke). Every page reads and writes through the
REST API's service (:class:`~confide.operator._service.AppService`) with the
session's token, so it is authorized exactly as the API is.

Server-rendered HTML, every value escaped (:mod:`._html`); one stylesheet and one
script, served from the package under ``/console/static/``; a strict
Content-Security-Policy.

Example::

    >>> app.mount("/console", create_console(service, database=db, logs=logs,
    ...                                      clock=utc_now, poll_interval=0.5))  # doctest: +SKIP
"""

from ._app import CONTENT_SECURITY_POLICY, SESSION_COOKIE, create_console

__all__ = ["CONTENT_SECURITY_POLICY", "SESSION_COOKIE", "create_console"]
