"""The console's routes: an ASGI app mounted at ``/console`` on the operator's API listener.

Each page reads through :class:`~.._service.AppService`, the REST API's service,
with the identity of the session (the API token it was signed in with), so the
console sees what that token sees through the API and nothing more: another
account's app is a 404 here too. Order of checks on a POST: ``Origin``, then the
session, then the form's CSRF token, then the service call (authenticate
before any side effect).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

from fastapi.concurrency import run_in_threadpool
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._db import AuthenticatedToken, Database, IssuedToken, authenticate_token
from .._logs import LogSource
from .._seams import Clock
from .._service import AppService, NotFound
from ._html import Html
from ._pages import PREFIX
from ._pages import (
    app_list as page_app_list,
)
from ._pages import (
    app_page as page_app_page,
)
from ._pages import (
    confirm as page_confirm,
)
from ._pages import (
    not_found as page_not_found,
)
from ._pages import (
    projects_and_plans as page_projects_and_plans,
)
from ._pages import (
    refused as page_refused,
)
from ._pages import (
    sign_in as page_sign_in,
)
from ._pages import (
    signed_in as page_signed_in,
)
from ._pages import (
    tokens as page_tokens,
)
from ._sessions import (
    SESSION_LIFETIME,
    SIGN_IN_LIFETIME,
    ConsoleIdentity,
    end_session,
    new_secret,
    resume_session,
    same_secret,
    start_session,
    well_formed,
)

#: The session's cookie, and the sign-in form's (double submit) cookie, as named over
#: plain HTTP (loopback, tests).
SESSION_COOKIE: Final = "confide_console"
SIGN_IN_COOKIE: Final = "confide_console_sign_in"
#: Over https the names carry the ``__Host-`` prefix (RFC 6265bis): a browser keeps such a
#: cookie only if it is Secure, has ``Path=/`` and no ``Domain``, so an app served under a
#: sibling name of the operator (its code is the owner's, not the operator's) cannot set
#: one for the console's host ("cookie tossing"), and the console reads only these names
#: over https (ADR 0025, review).
HOST_PREFIX: Final = "__Host-"
#: The console's response headers (ADR 0025): nothing from elsewhere, no inline script or
#: style, never framed, no referrer leaves, no sniffing.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
#: Largest form body the console reads (a token, a CSRF token: well under).
MAX_FORM_BYTES: Final = 8 * 1024
MAX_FORM_FIELDS: Final = 8
#: Lines of an app's log its page shows before following.
LOG_TAIL: Final = 200
#: One log follow's longest life; the browser then reconnects where it was (Last-Event-ID).
FOLLOW_LIMIT: Final = 600.0
#: Longest line sent as one event (a longer one is cut into several).
MAX_EVENT_LINE: Final = 64 * 1024
#: Log follows open at once for one account, and in all (each polls the log and the
#: database): one more is answered 429 with ``Retry-After``, never queued.
MAX_FOLLOWS_PER_ACCOUNT: Final = 8
MAX_FOLLOWS: Final = 64
#: Sign-in attempts one source (an IP address) may make: a bucket of this many, refilled
#: at this rate a second. Over it, 429 with ``Retry-After`` before any database work.
SIGN_IN_BURST: Final = 20
SIGN_IN_RATE: Final = 1 / 3
#: Sources whose bucket is remembered (the least recently seen is forgotten first).
MAX_SIGN_IN_SOURCES: Final = 4096
#: Largest offset a follower may ask for (JavaScript's exact integers).
_MAX_OFFSET: Final = 2**53
_HTML: Final = "text/html; charset=utf-8"


class _Refused(Exception):
    """A POST refused before anything happened: 403, with the reason."""


class _SignInLimiter:
    """Sign-in attempts per source: a token bucket each (pure: ``now`` is a parameter).

    A token is 256 random bits, so guessing one is hopeless anyway; the bound keeps one
    source from making the database check a stream of wrong tokens.
    """

    def __init__(self, burst: int, rate: float, max_sources: int) -> None:
        self._burst, self._rate, self._max_sources = float(burst), rate, max_sources
        #: source -> (tokens, when they were counted), least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def admit(self, source: str, now: float) -> int:
        """Take one attempt for ``source``: 0, or the seconds to wait (nothing taken)."""
        tokens, then = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - then) * self._rate)
        wait = 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self._rate))
        self._buckets[source] = (tokens if wait else tokens - 1.0, now)
        while len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        return wait


class _Follows:
    """Counts the log follows under way, per account and in all (one event loop: no lock)."""

    def __init__(self) -> None:
        self._per_account: dict[int, int] = {}
        self._total = 0

    def admit(self, account_id: int) -> bool:
        """Take a slot for one more follow of ``account_id``; ``False``: over a bound."""
        held = self._per_account.get(account_id, 0)
        if self._total >= MAX_FOLLOWS or held >= MAX_FOLLOWS_PER_ACCOUNT:
            return False
        self._per_account[account_id] = held + 1
        self._total += 1
        return True

    def release(self, account_id: int) -> None:
        left = self._per_account.get(account_id, 0) - 1
        if left < 0:
            return
        if left:
            self._per_account[account_id] = left
        else:
            del self._per_account[account_id]
        self._total -= 1


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer, and ``no-store`` to all but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        static = (path[len(root) :] if path.startswith(root) else path).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static_dir() -> Path:
    return Path(str(resources.files("confide.operator._console") / "static"))


def _own_origin(request: Request) -> str:
    return f"{'https' if _secure(request) else request.url.scheme}://{request.url.netloc}"


def _check_origin(request: Request) -> None:
    """A POST comes from one of the console's own pages, as the browser tells.

    ``Origin``, when the browser states it, must be the console's own. Under the
    console's ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on
    same-origin POSTs (Fetch, "serializing a request origin"), so then the Fetch
    Metadata header decides: ``Sec-Fetch-Site: same-origin`` (a header pages cannot
    set). Neither says so: refused (an old browser fails closed).
    """
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    own = _own_origin(request)
    if origin is not None and origin != "null":
        if origin != own:
            raise _Refused(f"this form was posted from {origin!r}, not from the console ({own!r})")
        if site is None or site == "same-origin":
            return
    elif site == "same-origin":
        return
    raise _Refused(
        f"this form was not posted from the console (Origin {origin!r}, Sec-Fetch-Site "
        f"{site!r}, expected {own!r} or same-origin): reload the page and try again"
    )


async def _read_form(request: Request) -> dict[str, str]:
    """A small URL-encoded form (bounded), first value of each field."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise _Refused(f"a form is posted as application/x-www-form-urlencoded, not {media!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(f"the form is larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _Refused("the form could not be read") from None
    return {name: values[0] for name, values in fields.items()}


def _secure(request: Request) -> bool:
    """Whether the browser reaches the console over https: the request's own scheme, or the
    operator's word that a TLS front end is before the listener (``console_https``: the
    API's listener is plain HTTP, so behind one every request's scheme is ``http``)."""
    return request.url.scheme == "https" or bool(getattr(request.app.state, "https", False))


def cookie_name(name: str, *, secure: bool) -> str:
    """The cookie's name as sent and read: ``__Host-`` prefixed over https."""
    return HOST_PREFIX + name if secure else name


def _cookie_path(secure: bool) -> str:
    # A __Host- cookie must have Path=/; the API beside the console takes bearer tokens,
    # never cookies, so the wider path grants nothing.
    return "/" if secure else PREFIX


def _get_cookie(request: Request, name: str) -> str | None:
    return request.cookies.get(cookie_name(name, secure=_secure(request)))


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    secure = _secure(request)
    response.set_cookie(
        cookie_name(name, secure=secure),
        value,
        max_age=max_age,
        path=_cookie_path(secure),
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def _delete_cookie(response: Response, request: Request, name: str) -> None:
    secure = _secure(request)
    response.delete_cookie(
        cookie_name(name, secure=secure),
        path=_cookie_path(secure),
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def _page(body: Html, status: int = 200) -> HTMLResponse:
    return HTMLResponse(str(body), status_code=status, media_type=_HTML)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


def _app_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(request.path_params["app_id"]))
    except ValueError:
        return None


def create_console(
    service: AppService,
    *,
    database: Database,
    logs: LogSource,
    clock: Clock,
    poll_interval: float,
    https: bool = False,
) -> ASGIApp:
    """The console as an ASGI app, to mount at :data:`~.PREFIX`. ``https``: browsers reach
    it over https through a TLS front end, whatever scheme its requests show: its cookies
    are then ``__Host-`` named and Secure on every request."""

    def identity(request: Request) -> ConsoleIdentity | None:
        session_id = _get_cookie(request, SESSION_COOKIE)
        if session_id is None or not well_formed(session_id):
            return None
        with database.session() as session:
            return resume_session(session, session_id, now=clock())

    def signed_in(who: ConsoleIdentity, title: str, body: Html, current: str = "") -> HTMLResponse:
        return _page(
            page_signed_in(title, body, account=who.auth.account, csrf=who.csrf, current=current)
        )

    def not_found(who: ConsoleIdentity) -> HTMLResponse:
        return _page(page_not_found(who.auth.account, who.csrf), 404)

    # -- signing in and out ------------------------------------------------------------------

    def sign_in_form(request: Request, error: str | None = None, status: int = 200) -> Response:
        form_token = new_secret()
        response = _page(page_sign_in(form_token, error=error), status)
        max_age = int(SIGN_IN_LIFETIME.total_seconds())
        _set_cookie(response, request, SIGN_IN_COOKIE, form_token, max_age)
        return response

    def sign_in_page(request: Request) -> Response:
        if identity(request) is not None:
            return _redirect("/")
        return sign_in_form(request)

    sign_ins = _SignInLimiter(SIGN_IN_BURST, SIGN_IN_RATE, MAX_SIGN_IN_SOURCES)

    async def sign_in(request: Request) -> Response:
        _check_origin(request)
        form = await _read_form(request)
        expected = _get_cookie(request, SIGN_IN_COOKIE)
        if not well_formed(expected) or not same_secret(str(expected), form.get("csrf")):
            raise _Refused("the sign-in form expired or came from elsewhere: reload it")
        source = request.client.host if request.client is not None else "-"
        wait = sign_ins.admit(source, time.monotonic())
        if wait:
            response = sign_in_form(
                request, f"Too many sign-in attempts from {source}: wait {wait} s.", 429
            )
            response.headers["Retry-After"] = str(wait)
            return response
        token = form.get("token", "").strip()

        def open_session() -> ConsoleIdentity | None:
            now = clock()
            with database.session() as session:
                auth = authenticate_token(session, token, now=now)
                if auth is None:
                    return None
                opened = start_session(session, auth, now=now)
                session.commit()
                return opened

        opened = await run_in_threadpool(open_session)
        if opened is None:
            return sign_in_form(request, "This is not a valid API token of this operator.", 401)
        response = _redirect("/")
        _set_cookie(
            response,
            request,
            SESSION_COOKIE,
            opened.session_id,
            int(SESSION_LIFETIME.total_seconds()),
        )
        _delete_cookie(response, request, SIGN_IN_COOKIE)
        return response

    async def sign_out(request: Request) -> Response:
        who = await post_identity(request)
        if who is None:
            return _redirect("/sign-in")

        def close() -> None:
            with database.session() as session:
                end_session(session, who.session_id)
                session.commit()

        await run_in_threadpool(close)
        response = _redirect("/sign-in")
        _delete_cookie(response, request, SESSION_COOKIE)
        return response

    async def post_identity(request: Request) -> ConsoleIdentity | None:
        """Origin, session, CSRF token, in that order; ``None``: not signed in."""
        _check_origin(request)
        who = await run_in_threadpool(identity, request)
        if who is None:
            return None
        form = await _read_form(request)
        if not same_secret(who.csrf, form.get("csrf")):
            raise _Refused("this form's CSRF token is missing or wrong: reload the page")
        return who

    # -- pages -------------------------------------------------------------------------------

    def page(
        render: Callable[[Request, ConsoleIdentity], Response],
    ) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            who = identity(request)
            if who is None:
                return _redirect("/sign-in")
            try:
                return render(request, who)
            except NotFound:
                return not_found(who)

        return endpoint

    def action(
        act: Callable[[AuthenticatedToken, Request], str],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = await post_identity(request)
            if who is None:
                return _redirect("/sign-in")
            try:
                return _redirect(await run_in_threadpool(act, who.auth, request))
            except NotFound:
                return await run_in_threadpool(not_found, who)

        return endpoint

    @page
    def apps(request: Request, who: ConsoleIdentity) -> Response:
        found = service.list_apps(who.auth, None).apps
        return signed_in(who, "Apps", page_app_list(found), current="/")

    @page
    def app(request: Request, who: ConsoleIdentity) -> Response:
        app_id = _app_id(request)
        if app_id is None:
            raise NotFound("no such app")
        record = service.get_app(who.auth, app_id)
        history = service.status_history(who.auth, app_id)
        data, offset = logs.read_end(app_id, LOG_TAIL)
        body = page_app_page(record, history, data.decode("utf-8", "replace"), offset)
        return signed_in(who, record.name, body)

    def confirm(verb: str) -> Callable[[Request], Response]:
        @page
        def endpoint(request: Request, who: ConsoleIdentity) -> Response:
            app_id = _app_id(request)
            if app_id is None:
                raise NotFound("no such app")
            record = service.get_app(who.auth, app_id)
            title = f"{verb.capitalize()} {record.name}"
            return signed_in(who, title, page_confirm(record, verb, who.csrf))

        return endpoint

    @action
    def stop(auth: AuthenticatedToken, request: Request) -> str:
        app_id = _app_id(request)
        if app_id is None:
            raise NotFound("no such app")
        service.stop(auth, app_id)
        return f"/apps/{app_id}"

    @action
    def delete(auth: AuthenticatedToken, request: Request) -> str:
        app_id = _app_id(request)
        if app_id is None:
            raise NotFound("no such app")
        service.delete(auth, app_id)
        return "/"

    @page
    def projects(request: Request, who: ConsoleIdentity) -> Response:
        body = page_projects_and_plans(service.list_projects(who.auth), service.plans())
        return signed_in(who, "Projects and plans", body, current="/projects")

    def tokens_page(who: ConsoleIdentity, issued: IssuedToken | None) -> Response:
        found = service.list_tokens(who.auth)
        body = page_tokens(found, who.auth.token_id, who.csrf, issued)
        return signed_in(who, "API tokens", body, current="/tokens")

    @page
    def tokens(request: Request, who: ConsoleIdentity) -> Response:
        return tokens_page(who, None)

    async def create_token(request: Request) -> Response:
        # Answered with the page itself (not a redirect): the secret is shown this once.
        who = await post_identity(request)
        if who is None:
            return _redirect("/sign-in")
        return await run_in_threadpool(lambda: tokens_page(who, service.create_token(who.auth)))

    @action
    def revoke_token(auth: AuthenticatedToken, request: Request) -> str:
        raw = str(request.path_params["token_id"])
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise NotFound("no such token")
        service.revoke_token(auth, int(raw))
        return "/tokens"

    # -- following a log ---------------------------------------------------------------------

    follows = _Follows()

    async def log_events(request: Request) -> Response:
        response = await run_in_threadpool(open_follow, request)
        if not isinstance(response, _Follow):
            return response
        account_id = response.account_id
        if not follows.admit(account_id):
            return Response(
                f"too many log follows at once (at most {MAX_FOLLOWS_PER_ACCOUNT} an account, "
                f"{MAX_FOLLOWS} in all): close another page following a log",
                status_code=429,
                headers={"Retry-After": "10"},
                media_type="text/plain",
            )

        return _FollowResponse(response.stream, lambda: follows.release(account_id))

    def open_follow(request: Request) -> Response | _Follow:
        who = identity(request)
        app_id = _app_id(request)
        if who is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        try:
            if app_id is None:
                raise NotFound("no such app")
            service.get_app(who.auth, app_id)
        except NotFound:
            return Response("no such app", status_code=404, media_type="text/plain")
        raw = request.headers.get("last-event-id") or request.query_params.get("offset") or "0"
        if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_OFFSET:
            return Response("bad offset", status_code=400, media_type="text/plain")

        def why_stop() -> str | None:
            with database.session() as session:
                if resume_session(session, who.session_id, now=clock()) is None:
                    return "signed-out"
            return None if service.app_active(who.auth, app_id) else "stopped"

        stream = _follow(logs, app_id, int(raw), why_stop, poll_interval)
        return _Follow(who.auth.account_id, stream)

    routes = [
        Route("/", apps, methods=["GET"]),
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/apps/{app_id}", app, methods=["GET"]),
        Route("/apps/{app_id}/stop", confirm("stop"), methods=["GET"]),
        Route("/apps/{app_id}/stop", stop, methods=["POST"]),
        Route("/apps/{app_id}/delete", confirm("delete"), methods=["GET"]),
        Route("/apps/{app_id}/delete", delete, methods=["POST"]),
        Route("/apps/{app_id}/log/events", log_events, methods=["GET"]),
        Route("/projects", projects, methods=["GET"]),
        Route("/tokens", tokens, methods=["GET"]),
        Route("/tokens", create_token, methods=["POST"]),
        Route("/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_static_dir()), name="static"),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        return _page(page_refused(str(exc)), 403)

    async def missing(request: Request, exc: Exception) -> Response:
        return _page(page_not_found(), 404)

    console = Starlette(
        routes=routes,
        exception_handlers={_Refused: refused, 404: missing},
    )
    console.state.https = https
    return _SecurityHeaders(console)


class _FollowResponse(StreamingResponse):
    """A follow's events; its slot is given back however the answer ends (done, cut, the
    client gone, even before the first event)."""

    def __init__(self, stream: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(stream, media_type="text/event-stream")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@dataclass(frozen=True, slots=True)
class _Follow:
    """A log follow allowed to start: whose, and its events."""

    account_id: int
    stream: AsyncIterator[bytes]


async def _follow(
    logs: LogSource,
    app_id: uuid.UUID,
    offset: int,
    why_stop: Callable[[], str | None],
    poll_interval: float,
) -> AsyncIterator[bytes]:
    """Server-sent events: each chunk of whole lines appended after ``offset``.

    Every event's id is the offset after its lines, so a reconnecting browser goes
    on where it was. ``end`` (``stopped`` or ``signed-out``) once ``why_stop()`` says so;
    the stream also closes after :data:`FOLLOW_LIMIT` (the browser reconnects). Both are
    checked at least every ``poll_interval`` even while lines keep coming: a log that
    never pauses is not a way around a sign-out, a revocation or the limit.
    """
    started = time.monotonic()
    checked = started
    pending = b""
    position = offset
    yield b"retry: 2000\n\n"
    while True:
        if time.monotonic() - started > FOLLOW_LIMIT:
            return
        chunk, position = await run_in_threadpool(logs.read_from, app_id, position)
        if chunk and time.monotonic() - checked >= poll_interval:
            checked = time.monotonic()
            reason = await run_in_threadpool(why_stop)
            if reason is not None:
                yield f"event: end\ndata: {reason}\n\n".encode()
                return
        if chunk:
            pending += chunk
            cut = pending.rfind(b"\n")
            if cut < 0 and len(pending) < MAX_EVENT_LINE:
                continue
            whole, pending = (
                (pending[: cut + 1], pending[cut + 1 :]) if cut >= 0 else (pending, b"")
            )
            yield _event(whole, position - len(pending))
            continue
        checked = time.monotonic()
        reason = await run_in_threadpool(why_stop)
        if reason is not None:
            yield f"event: end\ndata: {reason}\n\n".encode()
            return
        await asyncio.sleep(poll_interval)


def _event(lines: bytes, offset: int) -> bytes:
    text = lines.decode("utf-8", "replace").replace("\r", "")
    if text.endswith("\n"):
        text = text[:-1]
    data = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"id: {offset}\n{data}\n".encode()
