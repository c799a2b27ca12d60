"""The operator's database: engine and sessions, migrations, tokens and status history.

:class:`Database` wraps one SQLAlchemy engine and its session factory; it is
built at the entry point from :attr:`OperatorSettings.database_url` and passed
down. :func:`upgrade_database` runs ``alembic upgrade head`` with the
migrations shipped in this package (no ``alembic.ini`` needed).

API tokens look like ``cfd_<43 URL-safe characters>`` (32 random bytes); only
their SHA-256 is stored (not even a prefix), and the token itself is shown
once, at creation. A token's id (``GET /api/v1/me`` tells it) names it for
listing and revocation.

With SQLite, the operator's writers queue in this process, first come first
served, before SQLite's own lock (:class:`_SerialWriters`): SQLite's
busy handler polls instead of queueing, so a burst of writers (100 uploads at
once) outwaited its timeout and some failed. A writer that waits longer than
:data:`SQLITE_WRITE_WAIT` for its turn, or meets the lock of another process
for longer than :data:`SQLITE_BUSY_TIMEOUT`, raises :class:`DatabaseBusy`,
which the API answers 503 with ``Retry-After`` (never 500).

Example::

    >>> from datetime import UTC, datetime
    >>> db = Database.open("sqlite:///:memory:")  # doctest: +SKIP
    >>> upgrade_database(db)  # doctest: +SKIP
    >>> with db.session() as s:  # doctest: +SKIP
    ...     issued = create_token(s, "alice", now=datetime.now(UTC))
    ...     s.commit()
    >>> issued.token.startswith("cfd_")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from confide.errors import UsageError

from ._models import Account, ApiToken, AppStatusChange

TOKEN_PREFIX: Final = "cfd_"  # noqa: S105  (a prefix, not a secret)
_TOKEN_BYTES: Final = 32
_TOKEN: Final = re.compile(r"^cfd_[A-Za-z0-9_-]{43}$")
#: ``last_used_at`` is written at most this often per token (saves a write per request).
LAST_USED_RESOLUTION: Final = timedelta(seconds=60)
_ACCOUNT_NAME: Final = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
#: How long a writer of this process waits for its turn before :class:`DatabaseBusy` (seconds).
SQLITE_WRITE_WAIT: Final = 30.0
#: How long SQLite waits for the write lock of another process (seconds; ``busy_timeout``).
SQLITE_BUSY_TIMEOUT: Final = 5.0
#: What ``Retry-After`` tells a client refused with :class:`DatabaseBusy` (seconds).
BUSY_RETRY_AFTER: Final = 2
#: Statements that only read: they need no turn (anything else takes one, to be safe).
_READS: Final = frozenset({"SELECT", "PRAGMA", "EXPLAIN"})
#: ``Connection.info`` key: this DBAPI connection holds the writers' turn.
_TURN: Final = "confide_write_turn"


class DatabaseBusy(UsageError):
    """The database's write lock was not had in time: a retryable refusal (HTTP 503)."""

    code = "database_busy"


def _migrations_dir() -> Path:
    return Path(str(resources.files("confide.operator") / "migrations"))


class Database:
    """One engine and its session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, **engine_options: Any) -> Database:
        """Connect lazily to ``url`` (``sqlite:///PATH`` or ``postgresql+psycopg://...``)."""
        parsed = make_url(url)
        options: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                # One shared connection, or every session would see its own empty database.
                options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options.update(engine_options)
        engine = create_engine(parsed, **options)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            _SerialWriters(SQLITE_WRITE_WAIT).install(engine)
        return cls(engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session; the caller commits. Rolled back and closed on the way out."""
        with self._sessions() as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets the API read while the supervisor writes.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class _FifoLock:
    """A lock handed to its waiters in the order they came (``threading.Lock`` is not fair)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout):
            return True  # handed over by release()
        with self._mutex:
            try:
                self._waiters.remove(turn)
            except ValueError:
                return True  # handed over between the timeout and here: ours now
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # still held: by the next in line
            else:
                self._held = False


class _SerialWriters:
    """SQLite's writers of this process, one at a time in arrival order.

    A connection takes the turn before its first statement that is not a read
    (pysqlite begins the transaction there) and gives it back when its
    transaction ends (commit, rollback) or the connection goes back to the
    pool. Writers then wait in a queue instead of in SQLite's busy handler,
    which sleeps and polls, favours no one and gave up after ``busy_timeout``
    with ``database is locked`` under a burst of uploads. Reads (WAL) need no
    turn. An SQLite ``database is locked`` that still happens (another
    process, such as the ``confide operator token`` CLI, held the lock past
    :data:`SQLITE_BUSY_TIMEOUT`) is raised as :class:`DatabaseBusy` too.
    """

    def __init__(self, wait: float) -> None:
        self._lock = _FifoLock()
        self._wait = wait

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine, "handle_error", _busy_error)
        event.listen(engine, "checkin", self._checkin)
        event.listen(engine, "invalidate", self._checkin_invalidated)

    def _before(self, conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if _TURN in conn.info:
            return
        words = statement.lstrip().split(None, 1)
        if words and words[0].upper() in _READS:
            return
        if not self._lock.acquire(self._wait):
            raise DatabaseBusy(
                f"the database is busy: no turn to write within {self._wait:.0f} s",
                hint=f"try again in {BUSY_RETRY_AFTER} s",
            )
        conn.info[_TURN] = True

    def _release(self, info: dict[Any, Any]) -> None:
        if info.pop(_TURN, False):
            self._lock.release()

    def _end(self, conn: Connection) -> None:
        self._release(conn.info)

    def _checkin(self, _dbapi: Any, record: Any) -> None:
        if record is not None:
            self._release(record.info)

    def _checkin_invalidated(self, _dbapi: Any, record: Any, _exc: Any) -> None:
        self._checkin(_dbapi, record)


def _busy_error(context: Any) -> None:
    """SQLite's ``database is locked`` (the busy timeout ran out): :class:`DatabaseBusy`."""
    original = context.original_exception
    if isinstance(original, DatabaseBusy):
        raise original
    if "database is locked" in str(original):
        raise DatabaseBusy(
            f"the database is busy: {original}", hint=f"try again in {BUSY_RETRY_AFTER} s"
        ) from original


def upgrade_database(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    try:
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise UsageError(
            f"cannot migrate the database {db.engine.url.render_as_string(hide_password=True)}: "
            f"{exc.__class__.__name__}: {exc.orig if hasattr(exc, 'orig') else exc}"
        ) from exc


# -- tokens ----------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``token`` is the secret, shown once and never stored."""

    id: int
    account: str
    token: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known of a token after it was issued (no secret)."""

    id: int
    account: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuthenticatedToken:
    """The identity behind a valid bearer token."""

    token_id: int
    account_id: int
    account: str


def _check_account_name(name: str) -> None:
    if not _ACCOUNT_NAME.match(name):
        raise UsageError(
            f"account name {name!r} must be 1 to 63 lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )


def create_token(session: Session, account: str, *, now: datetime) -> IssuedToken:
    """Issue a token for ``account`` (created if absent). The caller commits."""
    _check_account_name(account)
    row = session.scalar(select(Account).where(Account.name == account))
    if row is None:
        row = Account(name=account, created_at=now)
        session.add(row)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    entry = ApiToken(
        account_id=row.id,
        token_sha256=hash_token(token),
        created_at=now,
    )
    session.add(entry)
    session.flush()
    return IssuedToken(id=entry.id, account=row.name, token=token, created_at=now)


def list_tokens(session: Session, account: str | None = None) -> list[TokenInfo]:
    """Every token (of ``account`` when given), oldest first."""
    query = select(ApiToken, Account.name).join(Account).order_by(ApiToken.id)
    if account is not None:
        query = query.where(Account.name == account)
    return [
        TokenInfo(
            id=t.id,
            account=name,
            created_at=t.created_at,
            last_used_at=t.last_used_at,
            revoked_at=t.revoked_at,
        )
        for t, name in session.execute(query)
    ]


def revoke_token(session: Session, token_id: int, *, now: datetime) -> TokenInfo:
    """Revoke a token by id (idempotent); :class:`UsageError` if there is none. Caller commits."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise UsageError(f"no token with id {token_id}", hint="see `confide operator token list`")
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
    return TokenInfo(
        id=row.id,
        account=row.account.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def authenticate_token(session: Session, token: str, *, now: datetime) -> AuthenticatedToken | None:
    """The identity of a valid, unrevoked token, or ``None``. Updates ``last_used_at``.

    The lookup is by the SHA-256 of the token, so the comparison never touches
    the secret; malformed tokens are refused before any query.
    """
    if not _TOKEN.match(token):
        return None
    found = session.execute(
        select(ApiToken, Account.name)
        .join(Account)
        .where(ApiToken.token_sha256 == hash_token(token))
    ).first()
    if found is None:
        return None
    row, account = found
    if row.revoked_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return AuthenticatedToken(token_id=row.id, account_id=row.account_id, account=account)


# -- per-account serialisation -------------------------------------------------------------


def lock_account(session: Session, account_id: int) -> None:
    """Hold the account's row until the session's transaction ends.

    Call it FIRST in a fresh transaction that counts an account's rows and
    then inserts one (the per-account app limit): concurrent such
    transactions of one account then run one after the other, so each counts
    what the previous one committed. It is a write (``UPDATE ... SET id =
    id``) because a write is what takes a lock on both backends:

    - PostgreSQL locks the row (as ``SELECT ... FOR UPDATE`` would); a second
      transaction waits for the first to end, and under READ COMMITTED its
      next statement (the count) sees the first one's rows;
    - SQLite takes the database's write lock: the driver begins the
      transaction just before this first write, so no older read snapshot is
      held, and a second writer waits (``busy_timeout``) instead of failing.
    """
    session.execute(update(Account).where(Account.id == account_id).values(id=Account.id))


# -- status history ------------------------------------------------------------------------


def status_history(session: Session, app_id: uuid.UUID) -> Sequence[AppStatusChange]:
    """An app's status changes, oldest first."""
    return session.scalars(
        select(AppStatusChange)
        .where(AppStatusChange.app_id == app_id)
        .order_by(AppStatusChange.at, AppStatusChange.id)
    ).all()
