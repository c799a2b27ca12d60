"""The supervisor's election with a Kubernetes Lease (confide.operator._election, ADR 0023).

The pure core with time as a parameter (take-over only after the lease expired on the
candidate's own clock, never before; a leader stops before anyone may take over; a
deposed leader stops at once), then replicas driving it against the API stand-in
(tests/kube_standin) through lightkube, every Lease they send validated against
Kubernetes' own schemas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx2
import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightkube import AsyncClient, KubeConfig
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from confide.errors import UsageError
from confide.operator._election import (
    LeaderElector,
    LeaseElection,
    LeaseRecord,
    LeaseTiming,
)
from kube_standin import AsyncTransport, KubeApi

K8S_VERSION = "1.33.0"
NS = "confide"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TIMING = LeaseTiming()  # client-go's defaults: 15 s, 10 s, 2 s


def wall(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the pure core ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "words"),
    [
        (15, 15.0, 2.0, "shorter than the lease duration"),
        (15, 20.0, 2.0, "shorter than the lease duration"),
        (15, 10.0, 9.0, "retry period"),
        (15, 10.0, 0.0, "retry period"),
        (0, -1.0, 0.5, "lease duration must be in"),
        (7200, 10.0, 2.0, "lease duration must be in"),
    ],
)
def test_timing_that_could_overlap_two_leaders_is_refused(
    lease: int, renew: float, retry: float, words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        LeaseTiming(lease, renew, retry)


def test_a_lease_duration_is_whole_seconds() -> None:
    with pytest.raises(UsageError, match="whole seconds"):
        LeaseTiming(15.5, 10.0, 2.0)  # type: ignore[arg-type]


def test_the_first_candidate_creates_the_record() -> None:
    a = LeaderElector("a", TIMING)
    a.observe(None, None, now=0.0)
    record = a.next_record(now=0.0, wall=wall(0))
    assert record == LeaseRecord("a", 15, wall(0), wall(0), 0)
    assert not a.leading(0.0)  # not before the write succeeded
    a.written(record, "7", started=0.0)
    assert a.leading(9.99) and not a.leading(10.0)  # the renew deadline, from the start


def test_another_holder_is_taken_over_after_the_duration_on_our_clock_and_not_before() -> None:
    held = LeaseRecord("a", 15, wall(-100), wall(-100), 3)  # its wall times are old: ignored
    b = LeaderElector("b", TIMING)
    b.observe(held, "5", now=1000.0)
    for now in (1000.0, 1007.0, 1014.999):
        assert b.next_record(now=now, wall=wall(now)) is None
        b.observe(held, "5", now=now)  # unchanged: the observation time stays
    taken = b.next_record(now=1015.0, wall=wall(1015))
    assert taken == LeaseRecord("b", 15, wall(1015), wall(1015), 4)
    assert b.version == "5"  # the write names the version read (409 if it changed)


def test_a_renewal_seen_restarts_the_wait() -> None:
    b = LeaderElector("b", TIMING)
    b.observe(LeaseRecord("a", 15, wall(0), wall(0), 0), "5", now=0.0)
    b.observe(LeaseRecord("a", 15, wall(0), wall(2), 0), "6", now=2.0)  # a renewed
    assert b.next_record(now=16.0, wall=wall(16)) is None
    assert b.next_record(now=17.0, wall=wall(17)) is not None


def test_a_deposed_leader_stops_at_once() -> None:
    a = LeaderElector("a", TIMING)
    a.observe(None, None, now=0.0)
    record = a.next_record(now=0.0, wall=wall(0))
    assert record is not None
    a.written(record, "1", started=0.0)
    assert a.leading(1.0)
    a.observe(LeaseRecord("b", 15, wall(1), wall(1), 1), "2", now=1.0)
    assert not a.leading(1.0)  # well before its own renew deadline
    assert a.release_record(wall=wall(1)) is None  # nothing of ours to release


def test_a_renewal_keeps_the_acquire_time_and_transitions() -> None:
    a = LeaderElector("a", TIMING)
    mine = LeaseRecord("a", 15, wall(0), wall(0), 2)
    a.observe(mine, "9", now=0.0)
    renewed = a.next_record(now=2.0, wall=wall(2))
    assert renewed == LeaseRecord("a", 15, wall(0), wall(2), 2)
    a.written(mine, "9", started=0.0)
    assert a.release_record(wall=wall(3)) == LeaseRecord("", 1, wall(3), wall(3), 2)


@given(
    lease=st.integers(min_value=1, max_value=60),
    renew_share=st.floats(min_value=0.05, max_value=0.99),
    write_delay=st.floats(min_value=0.0, max_value=30.0),
    seen_delay=st.floats(min_value=0.0, max_value=30.0),
)
def test_the_leader_stops_before_any_candidate_may_take_over(
    lease: int, renew_share: float, write_delay: float, seen_delay: float
) -> None:
    """Fail closed: whatever the delays of the write and of a candidate's read, the leader's
    last moment comes before the candidate's first."""
    renew = lease * renew_share
    timing = LeaseTiming(lease, renew, renew / 2)
    a, b = LeaderElector("a", timing), LeaderElector("b", timing)
    started = 100.0
    a.observe(None, None, now=started)
    record = a.next_record(now=started, wall=wall(started))
    assert record is not None
    written_at = started + write_delay  # the server stored it then
    a.written(record, "1", started=started)
    b.observe(record, "1", now=written_at + seen_delay)
    expiry = b.expires_at()
    until = a.leading_until()
    assert expiry is not None and until is not None
    assert until < expiry
    assert b.next_record(now=until, wall=wall(until)) is None


def test_an_identity_is_bounded() -> None:
    with pytest.raises(UsageError):
        LeaderElector("", TIMING)
    with pytest.raises(UsageError):
        LeaderElector("x" * 301, TIMING)


# -- replicas against the API stand-in -------------------------------------------------------

#: Small enough for a test, in client-go's proportions.
FAST = LeaseTiming(lease_duration=1, renew_deadline=0.6, retry_period=0.1)


def kubeconfig() -> KubeConfig:
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "standin", "cluster": {"server": "http://kube.invalid"}}],
            "users": [{"name": "operator", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "operator"}}],
            "current-context": "c",
        }
    )


class RecordingTransport(AsyncTransport):
    """The stand-in's transport, noting when each Lease write of this replica succeeded."""

    def __init__(self, api: KubeApi, writes: list[tuple[float, str]], who: str) -> None:
        super().__init__(api)
        self.writes, self.who = writes, who

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if request.method in ("POST", "PUT") and response.status_code < 300:
            self.writes.append((asyncio.get_running_loop().time(), self.who))
        return response


@dataclass
class Replica:
    name: str
    election: LeaseElection
    transport: RecordingTransport
    client: AsyncClient
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: (loop time, "start" | "stop") of its supervisor.
    leading: list[tuple[float, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def supervise(self) -> None:
        loop = asyncio.get_running_loop()
        self.leading.append((loop.time(), "start"))
        try:
            await asyncio.Event().wait()  # supervises until cancelled
        finally:
            self.leading.append((loop.time(), "stop"))

    def start(self) -> None:
        self.task = asyncio.create_task(self.election.run(self.supervise, self.stop.wait))

    @property
    def supervising(self) -> bool:
        return bool(self.leading) and self.leading[-1][1] == "start"


def replica(api: KubeApi, name: str, writes: list[tuple[float, str]]) -> Replica:
    transport = RecordingTransport(api, writes, name)
    client = AsyncClient(kubeconfig(), namespace=NS, transport=transport)
    election = LeaseElection(
        client, name="confide-supervisor", namespace=NS, identity=name, timing=FAST
    )
    return Replica(name, election, transport, client)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll the loop until ``condition()``; the loop time it became true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)
    return loop.time()


def validate_leases(api: KubeApi) -> int:
    count = 0
    for _method, path, body in api.sent:
        if "/leases" in path:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
            count += 1
    assert count, "no Lease was sent"  # guard: validation ran on something
    return count


def two_replicas(
    test: Callable[[KubeApi, Replica, Replica, list[tuple[float, str]]], Awaitable[None]],
) -> Callable[[], None]:
    def run() -> None:
        async def body() -> None:
            api = KubeApi()
            writes: list[tuple[float, str]] = []
            a, b = replica(api, "a", writes), replica(api, "b", writes)
            a.start()
            await until(lambda: a.supervising)
            b.start()
            try:
                await asyncio.wait_for(test(api, a, b, writes), 20)
                validate_leases(api)
            finally:
                for r in (a, b):
                    r.stop.set()
                    r.transport.partitioned = False
                for r in (a, b):
                    if r.task is not None:
                        await asyncio.wait({r.task}, timeout=5)
                        assert r.task.done()
                        if not r.task.cancelled():
                            r.task.result()  # an election that failed fails the test
                    await r.client.close()

        asyncio.run(body())

    run.__name__ = test.__name__
    return run


@two_replicas
async def test_two_replicas_elect_one_leader(
    api: KubeApi, a: Replica, b: Replica, writes: list[tuple[float, str]]
) -> None:
    await asyncio.sleep(3 * FAST.lease_duration)  # several terms' worth of renewals
    assert a.supervising and not b.leading
    assert a.election.terms == 1 and b.election.terms == 0
    spec = api.get("leases", NS, "confide-supervisor")["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert len([w for w in writes if w[1] == "a"]) >= 10  # a kept renewing


@two_replicas
async def test_a_dead_leader_is_replaced_after_the_lease_expires_and_not_before(
    api: KubeApi, a: Replica, b: Replica, writes: list[tuple[float, str]]
) -> None:
    # a dies: no more requests, no release (kill -9 of its pod).
    a.transport.partitioned = True
    if a.task is not None:
        a.task.cancel()
    taken = await until(lambda: b.supervising)
    last_write = max(t for t, who in writes if who == "a")
    assert taken - last_write >= FAST.lease_duration
    assert taken - last_write < FAST.lease_duration + 5 * FAST.retry_period  # and promptly
    spec = api.get("leases", NS, "confide-supervisor")["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


@two_replicas
async def test_a_partitioned_leader_stops_before_the_other_takes_over(
    api: KubeApi, a: Replica, b: Replica, writes: list[tuple[float, str]]
) -> None:
    a.transport.partitioned = True  # a is alive but cannot reach the API server
    taken = await until(lambda: b.supervising)
    stopped = a.leading[-1]
    assert stopped[1] == "stop", a.leading
    last_write = max(t for t, who in writes if who == "a")
    assert stopped[0] < taken  # never two supervisors
    assert stopped[0] - last_write <= FAST.renew_deadline + 0.05  # by its renew deadline
    # The partition heals: a reads b's hold and stays a follower.
    a.transport.partitioned = False
    await asyncio.sleep(3 * FAST.retry_period)
    assert not a.supervising and b.supervising


@two_replicas
async def test_a_deposed_leader_stops_at_its_next_round(
    api: KubeApi, a: Replica, b: Replica, writes: list[tuple[float, str]]
) -> None:
    # Another holder written over a's (an administrator, or a replica that saw it expire).
    now = datetime.now(UTC)
    rv = api.get("leases", NS, "confide-supervisor")["metadata"]["resourceVersion"]
    intruder = Lease(
        metadata=ObjectMeta(name="confide-supervisor", namespace=NS, resourceVersion=rv),
        spec=LeaseSpec(
            holderIdentity="intruder",
            leaseDurationSeconds=FAST.lease_duration,
            acquireTime=now,
            renewTime=now,
            leaseTransitions=1,
        ),
    )
    loop = asyncio.get_running_loop()
    written = loop.time()
    await a.client.replace(intruder)
    stopped = await until(lambda: not a.supervising)
    assert stopped - written <= 2 * FAST.retry_period + 0.05  # its next round, not the deadline
    assert not b.leading  # b waits for the intruder's lease to expire


@two_replicas
async def test_a_leader_that_shuts_down_releases_the_lease(
    api: KubeApi, a: Replica, b: Replica, writes: list[tuple[float, str]]
) -> None:
    loop = asyncio.get_running_loop()
    a.stop.set()
    if a.task is not None:
        await asyncio.wait_for(a.task, 5)
    released = loop.time()
    assert a.leading[-1][1] == "stop"
    assert api.get("leases", NS, "confide-supervisor")["spec"].get("holderIdentity") in (None, "b")
    taken = await until(lambda: b.supervising)
    assert taken - released < FAST.lease_duration  # no need to wait the lease out


def test_a_supervisor_that_fails_ends_the_election_and_releases_the_lease() -> None:
    """A bug in the supervisor is not swallowed: the election raises it (the operator then
    stops) and gives the Lease up, so another replica need not wait it out."""

    async def body() -> None:
        api = KubeApi()
        writes: list[tuple[float, str]] = []
        a = replica(api, "a", writes)

        async def failing() -> None:
            raise LookupError("a bug in the supervisor")

        task = asyncio.create_task(a.election.run(failing, a.stop.wait))
        with pytest.raises(LookupError):
            await asyncio.wait_for(task, 5)
        spec = api.get("leases", NS, "confide-supervisor")["spec"]
        assert spec.get("holderIdentity") is None and spec["leaseDurationSeconds"] == 1
        validate_leases(api)
        await a.client.close()

    asyncio.run(body())
