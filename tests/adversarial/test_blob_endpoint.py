"""An attacker reads ``GET /api/v1/blobs/<sha256>``, the API's one read without a token.

The Kubernetes backend's pods fetch their encrypted package there (ADR 0007); anyone
who reaches the API can call it. Each bound is attacked over real TCP against a real
API server (SQLite), from loopback addresses of its own:

- only the package of a live app is served: a digest of a deleted, stopped or
  never-stored app is 404, the same answer;
- only a wheel of a live app's measured requirements lock is served from the wheel
  cache (ADR 0030): a wheel of a deleted app's lock, a cached wheel no live lock names,
  the lock itself and a wheel over the size bound are 404, the same answer;
- a source asking too often is shed (429, ``Retry-After``); another source is served;
- a source holding too many downloads open is shed (429); all sources together
  holding too many are shed (503);
- a reader slower than the deadline is cut, and its slot is given back;
- a reader that stops reading makes the server read only a bounded part of the file.

Every wait is bounded; no assertion is about time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
from sqlalchemy import select, update

from confide.operator import App, BlobStore, Database
from confide.operator._blobs import BlobLimits
from confide.operator._settings import KubernetesSettings
from confide.operator._wheels import WheelCache
from confide.wire import API_PREFIX, AppStatus, LaunchManifest, RequirementsLock
from support.operator_api import Operator, OperatorFactory
from support.operator_flow import add_app, ask
from support.wheels import cache_wheel, lock_of, wheel_bytes

K8S: Final = KubernetesSettings(
    namespace="apps", image="img", operator_id="op", blob_url="http://op:8080/api/v1/blobs"
)
#: A blob larger than every socket buffer between the server and a client that stalls.
LARGE: Final = 48 * 1024 * 1024
#: Bound on any one request of these tests (seconds).
STEP: Final = 20.0


@pytest.fixture(name="operators")
def operators_fixture(tmp_path: Path) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(tmp_path, f"sqlite:///{tmp_path / 'db' / 'operator.db'}")
    try:
        yield factory
    finally:
        factory.close()


def _start(operators: OperatorFactory, **limits: Any) -> Operator:
    return operators.start(kubernetes=K8S, blob_limits=BlobLimits(**limits))


def _store(operator: Operator, content: bytes) -> str:
    blob = BlobStore(operator.settings.blobs_dir).put(io.BytesIO(content), limit=len(content))
    return blob.sha256_hex


def _app_with(database: Database, sha256_hex: str) -> uuid.UUID:
    """A live (spawning) app whose package is ``sha256_hex``."""
    app_id = add_app(database)
    with database.session() as s:
        s.execute(update(App).where(App.id == app_id).values(package_sha256=sha256_hex))
        s.commit()
    return app_id


@contextmanager
def _client(operator: Operator, source: str) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=operator.url, transport=transport, timeout=STEP) as client:
        yield client


def _url(sha256_hex: str) -> str:
    return f"{API_PREFIX}/blobs/{sha256_hex}"


def test_only_the_packages_of_live_apps_are_served(operators: OperatorFactory) -> None:
    operator = _start(operators)
    contents = {name: f"CONFIDEP {name}".encode() for name in ("live", "deleted", "stopped")}
    digests = {name: _store(operator, content) for name, content in contents.items()}
    _app_with(operator.database, digests["live"])
    _app_with(operator.database, digests["deleted"])
    stopped = _app_with(operator.database, digests["stopped"])
    deleted_app = _app_with(operator.database, digests["deleted"])
    ask(operator.database, deleted_app, delete=True)
    with operator.database.session() as s:  # the other app of that package is gone too
        s.execute(
            update(App)
            .where(App.package_sha256 == digests["deleted"], App.id != deleted_app)
            .values(status=AppStatus.DELETED.value)
        )
        s.execute(update(App).where(App.id == stopped).values(status=AppStatus.STOPPED.value))
        s.commit()
    never = hashlib.sha256(b"never stored").hexdigest()
    cases = {
        digests["live"]: (200, contents["live"]),
        digests["deleted"]: (404, None),
        digests["stopped"]: (404, None),
        never: (404, None),
    }
    with _client(operator, "127.0.0.2") as c:
        answers = {digest: c.get(_url(digest)) for digest in cases}
    for digest, (code, body) in cases.items():
        assert answers[digest].status_code == code, digest
        if body is not None:
            assert answers[digest].content == body
    # The refusals cannot be told apart: a deleted app's package looks never stored.
    assert answers[digests["deleted"]].json() == answers[never].json()


def _locked_app(operator: Operator, *wheels: bytes) -> tuple[uuid.UUID, RequirementsLock]:
    """A live app whose launch manifest measures a lock of ``wheels``, all in the cache."""
    lock = lock_of(*((f"dep{i}", "1.0", data) for i, data in enumerate(wheels)))
    cache = WheelCache(operator.settings.wheels_dir)
    cache.put_lock(lock)
    for data in wheels:
        cache_wheel(cache.root, data)
    app_id = add_app(operator.database)
    with operator.database.session() as s:
        text = s.scalar(select(App.launch_manifest).where(App.id == app_id))
        assert text is not None
        locked = dataclasses.replace(
            LaunchManifest.from_json(text), requirements_sha256=lock.digest()
        )
        s.execute(
            update(App).where(App.id == app_id).values(launch_manifest=locked.to_json().decode())
        )
        s.commit()
    return app_id, lock


def test_only_the_wheels_of_live_apps_locks_are_served(
    operators: OperatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = _start(operators)
    live = wheel_bytes("live", "1.0")
    large = wheel_bytes("large", "1.0", {"large/__init__.py": os.urandom(4096)})
    _locked_app(operator, live, large)
    gone = wheel_bytes("gone", "1.0")
    deleted, _ = _locked_app(operator, gone)
    ask(operator.database, deleted, delete=True)
    unlocked = wheel_bytes("unlocked", "1.0")
    cache_wheel(operator.settings.wheels_dir, unlocked)  # cached, but no live lock names it
    _, lock = _locked_app(operator, wheel_bytes("another", "1.0"))
    # The size bound: a file larger than the bound is not served, whatever its name.
    monkeypatch.setattr("confide.operator._blobs.MAX_WHEEL_SIZE", len(large) - 1)
    never = hashlib.sha256(b"never stored").hexdigest()
    cases = {
        hashlib.sha256(live).hexdigest(): (200, live),
        hashlib.sha256(gone).hexdigest(): (404, None),
        hashlib.sha256(unlocked).hexdigest(): (404, None),
        hashlib.sha256(large).hexdigest(): (404, None),
        lock.digest().hex(): (404, None),  # the lock is not a wheel: pods get it otherwise
        never: (404, None),
    }
    with _client(operator, "127.0.0.2") as c:
        answers = {digest: c.get(_url(digest)) for digest in cases}
    for digest, (code, body) in cases.items():
        assert answers[digest].status_code == code, digest
        if body is not None:
            assert answers[digest].content == body
    refused = [answers[d].json() for d, (code, _) in cases.items() if code == 404]
    assert refused and all(r == answers[never].json() for r in refused)


def test_an_unknown_digest_costs_no_lock_reads_once_the_live_locks_are_known(
    operators: OperatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (ADR 0030): each request read the lock of every live app through a cache of
    MAX_REMEMBERED_LOCKS, in the same order each time: past that many live locks every
    unauthenticated request read and parsed all of them from disk (up to 128 KiB each).
    Now the live locks' wheels are remembered while the set of live locks is unchanged."""
    monkeypatch.setattr("confide.operator._blobs.MAX_REMEMBERED_LOCKS", 2)
    reads: list[bytes] = []
    real = WheelCache.read_lock

    def counted(self: WheelCache, sha256: bytes) -> RequirementsLock:
        reads.append(sha256)
        return real(self, sha256)

    monkeypatch.setattr(WheelCache, "read_lock", counted)
    operator = _start(operators, per_source_burst=16)
    wheels = [wheel_bytes(f"w{i}", "1.0") for i in range(3)]
    for data in wheels:  # three live locks: more than the cache of two
        _locked_app(operator, data)
    never = hashlib.sha256(b"never stored").hexdigest()
    with _client(operator, "127.0.0.2") as c:
        assert c.get(_url(hashlib.sha256(wheels[0]).digest().hex())).status_code == 200
        first = len(reads)
        for _ in range(5):
            assert c.get(_url(never)).status_code == 404
        assert len(reads) == first, "the live locks were read again"
        assert first >= 3  # guard: each lock was read once
        # A change of the live set is seen at once: a deleted app's wheel is no more served.
        deleted, _ = _locked_app(operator, gone := wheel_bytes("gone", "1.0"))
        assert c.get(_url(hashlib.sha256(gone).hexdigest())).status_code == 200
        ask(operator.database, deleted, delete=True)
        assert c.get(_url(hashlib.sha256(gone).hexdigest())).status_code == 404


def test_a_source_asking_too_often_is_shed_and_another_is_served(
    operators: OperatorFactory,
) -> None:
    burst = 5
    operator = _start(operators, per_source_rate=0.5, per_source_burst=burst)
    digest = _store(operator, b"CONFIDEP rate")
    _app_with(operator.database, digest)
    with _client(operator, "127.0.0.2") as attacker:
        codes = [attacker.get(_url(digest)) for _ in range(3 * burst)]
    served = [r for r in codes if r.status_code == 200]
    shed = [r for r in codes if r.status_code == 429]
    assert len(served) + len(shed) == len(codes)
    # The bucket refills at 0.5 a second: the burst and at most a few refills are served.
    assert burst <= len(served) <= burst + 3
    assert shed and all(int(r.headers["Retry-After"]) >= 1 for r in shed)
    with _client(operator, "127.0.0.3") as other:
        assert other.get(_url(digest)).status_code == 200


def _stalled(stack: ExitStack, operator: Operator, source: str, digest: str) -> httpx.Response:
    """A download whose head was read and whose body is never read."""
    client = stack.enter_context(_client(operator, source))
    response = stack.enter_context(client.stream("GET", _url(digest)))
    return response


def test_too_many_downloads_at_once_are_shed_per_source_and_in_all(
    operators: OperatorFactory,
) -> None:
    operator = _start(operators, per_source_concurrent=2, concurrent=3)
    digest = _store(operator, os.urandom(LARGE))
    _app_with(operator.database, digest)
    with ExitStack() as stack:
        held = [_stalled(stack, operator, "127.0.0.2", digest) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        with _client(operator, "127.0.0.2") as c:
            per_source = c.get(_url(digest))
        assert per_source.status_code == 429 and per_source.headers["Retry-After"] == "1"
        held.append(_stalled(stack, operator, "127.0.0.3", digest))
        assert held[-1].status_code == 200
        with _client(operator, "127.0.0.4") as c:
            overall = c.get(_url(digest))
        assert overall.status_code == 503 and overall.headers["Retry-After"] == "1"
    # The stalled clients went away: their slots come back (the server sees them go).
    with _client(operator, "127.0.0.4") as c:
        for _ in range(int(STEP / 0.01)):
            again = c.get(_url(digest))
            if again.status_code != 503:
                break
    assert again.status_code == 200 and len(again.content) == LARGE


def test_a_reader_slower_than_the_deadline_is_cut_and_its_slot_given_back(
    operators: OperatorFactory,
) -> None:
    operator = _start(operators, per_source_concurrent=1, send_deadline=0.5)
    content = os.urandom(LARGE)
    digest = _store(operator, content)
    _app_with(operator.database, digest)
    with ExitStack() as stack:
        slow = _stalled(stack, operator, "127.0.0.2", digest)
        assert slow.status_code == 200
        # It reads nothing for a while: the server cuts it at the deadline. The wait is
        # for that outcome (the same source admitted again), bounded by STEP.
        with _client(operator, "127.0.0.2") as c:
            for _ in range(int(STEP / 0.1)):
                answer = c.get(_url(digest))
                if answer.status_code == 200:
                    break
                assert answer.status_code == 429
                c.get(f"{API_PREFIX}/health")  # a cheap pause that is not a sleep
            else:
                pytest.fail("the stalled download was never cut")
        assert answer.content == content
        with pytest.raises(httpx.HTTPError):
            b"".join(slow.iter_bytes())  # what it gets is cut short


def test_a_reader_that_stops_reading_holds_a_bounded_part_of_the_file(
    operators: OperatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = [0]
    real_open = anyio.open_file

    async def counting_open(*args: Any, **kwargs: Any) -> Any:
        file = await real_open(*args, **kwargs)
        real_read = file.read

        async def counted(size: int = -1) -> bytes:
            data: bytes = await real_read(size)
            read[0] += len(data)
            return data

        file.read = counted
        return file

    monkeypatch.setattr(anyio, "open_file", counting_open)
    operator = _start(operators)
    digest = _store(operator, os.urandom(LARGE))
    _app_with(operator.database, digest)
    with ExitStack() as stack:
        stalled = _stalled(stack, operator, "127.0.0.2", digest)
        assert stalled.status_code == 200
        # The server reads on until the sockets' buffers are full, then waits.
        before = -1
        for _ in range(200):
            with _client(operator, "127.0.0.3") as c:
                c.get(f"{API_PREFIX}/health")
            if read[0] == before and read[0] > 0:
                break
            before = read[0]
        assert 0 < read[0] < LARGE // 2
