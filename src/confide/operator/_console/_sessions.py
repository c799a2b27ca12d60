"""The console's sessions and CSRF tokens (ADR 0025).

Signing in exchanges a valid API token for a session: a random id of
:data:`SESSION_ID_BYTES` bytes, sent to the browser once in an HttpOnly,
SameSite=Strict cookie and stored only as its SHA-256 (the table
``console_sessions``). A session speaks for the token it was signed in with: it
ends when it expires (:data:`SESSION_LIFETIME` after sign-in, not extended by
use), when its owner signs out (its row is deleted), and when the token is
revoked or deleted.

Every form carries a synchronizer token bound to the session:
``HMAC-SHA256(key=session id, "confide console csrf v1")``. Only a page served
to the session's browser knows it (the id is HttpOnly, the page is same-origin
only), so a form posted from another site cannot carry it. The sign-in form has
no session yet: its token is a random value also set in a short-lived
SameSite=Strict cookie (double submit). Every POST is also refused unless its
``Origin`` is the console's own.

Example::

    >>> opened = start_session(db_session, auth, now=now)  # doctest: +SKIP
    >>> resume_session(db_session, opened.session_id, now=now).auth == auth  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .._db import AuthenticatedToken
from .._models import Account, ApiToken, ConsoleSession

#: How long a session lasts after sign-in (use does not extend it).
SESSION_LIFETIME: Final = timedelta(hours=8)
#: How long a sign-in form may wait before it is posted.
SIGN_IN_LIFETIME: Final = timedelta(minutes=30)
#: Random bytes of a session id (and of a sign-in form's token).
SESSION_ID_BYTES: Final = 32
#: Most sessions one API token may hold; signing in again drops the oldest beyond it.
MAX_SESSIONS_PER_TOKEN: Final = 32
#: What a session id (or sign-in token) looks like: URL-safe base64 of 32 bytes.
_SECRET: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_CSRF_CONTEXT: Final = b"confide console csrf v1"


def new_secret() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def well_formed(value: str | None) -> bool:
    """``value`` looks like a secret of ours (checked before any lookup or comparison)."""
    return value is not None and _SECRET.fullmatch(value) is not None


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def csrf_token(session_id: str) -> str:
    """The synchronizer token of the session's forms."""
    return hmac.new(session_id.encode("ascii"), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def same_secret(expected: str, submitted: str | None) -> bool:
    """``submitted`` is ``expected`` (constant time)."""
    return submitted is not None and hmac.compare_digest(
        expected.encode("utf-8"), submitted.encode("utf-8")
    )


@dataclass(frozen=True, slots=True)
class ConsoleIdentity:
    """A signed-in console: who it speaks for, and the token its forms must carry."""

    auth: AuthenticatedToken
    session_id: str
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_token(self.session_id)


def start_session(session: Session, auth: AuthenticatedToken, *, now: datetime) -> ConsoleIdentity:
    """A new session for ``auth``'s token; expired sessions are dropped. The caller commits."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    kept = session.scalars(
        select(ConsoleSession.id)
        .where(ConsoleSession.token_id == auth.token_id)
        .order_by(ConsoleSession.created_at.desc(), ConsoleSession.id.desc())
        .offset(MAX_SESSIONS_PER_TOKEN - 1)
    ).all()
    if kept:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id.in_(kept)))
    session_id = new_secret()
    expires = now + SESSION_LIFETIME
    session.add(
        ConsoleSession(
            session_sha256=_hash(session_id),
            token_id=auth.token_id,
            created_at=now,
            expires_at=expires,
        )
    )
    session.flush()
    return ConsoleIdentity(auth=auth, session_id=session_id, expires_at=expires)


def resume_session(session: Session, session_id: str, *, now: datetime) -> ConsoleIdentity | None:
    """The identity of a live session: not expired, its token not revoked; else ``None``."""
    if not well_formed(session_id):
        return None
    found = session.execute(
        select(ConsoleSession, ApiToken, Account.name)
        .join(ApiToken, ConsoleSession.token_id == ApiToken.id)
        .join(Account, ApiToken.account_id == Account.id)
        .where(ConsoleSession.session_sha256 == _hash(session_id))
    ).first()
    if found is None:
        return None
    row, token, account = found
    if row.expires_at <= now or token.revoked_at is not None:
        return None
    auth = AuthenticatedToken(token_id=token.id, account_id=token.account_id, account=account)
    return ConsoleIdentity(auth=auth, session_id=session_id, expires_at=row.expires_at)


def end_session(session: Session, session_id: str) -> None:
    """Sign out: the session's row is deleted. The caller commits."""
    if well_formed(session_id):
        session.execute(
            delete(ConsoleSession).where(ConsoleSession.session_sha256 == _hash(session_id))
        )
