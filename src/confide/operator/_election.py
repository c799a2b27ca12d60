"""The supervisor as a singleton among operator replicas, elected with a Kubernetes Lease.

No consensus of our own (ADR 0023): the replicas compete for one
``coordination.k8s.io/v1`` Lease as client-go's ``leaderelection`` package
documents it, and the API server's optimistic concurrency decides:

- the Lease's ``spec`` is the record: ``holderIdentity``, ``leaseDurationSeconds``,
  ``acquireTime``, ``renewTime``, ``leaseTransitions``;
- every write names the ``metadata.resourceVersion`` it read; a replica that read
  an older version gets **409 Conflict** and has won nothing (creating a Lease that
  exists is 409 AlreadyExists, the same answer);
- a candidate takes over a Lease held by another only once ``leaseDurationSeconds``
  have passed on **its own** monotonic clock since it last saw the record change
  (client-go's ``observedTime``): no replica compares its wall clock with another's;
- the leader renews every ``retry_period`` and leads only until ``renew_deadline``
  after the start of its last successful renewal. Since the renewal's write happened
  after that start, and a candidate's observation after the write,
  ``renew_deadline < lease_duration`` means the leader has **stopped** before any
  candidate may take over (fail closed); the difference covers clock-rate drift and
  the stop itself;
- a leader that reads another holder in the Lease (it was deposed, e.g. after a
  partition) stops at once; one that stops cleanly releases the Lease (holder
  empty, duration 1 s), so the next replica need not wait out the duration.

:class:`LeaderElector` is the pure core (time is a parameter: ``now`` is a
monotonic reading in seconds, ``wall`` the UTC time written into the record);
:class:`LeaseElection` drives it against the API with lightkube and runs the
supervisor only while this replica leads, cancelling it the moment it does not.

Example::

    >>> elector = LeaderElector("replica-a", LeaseTiming())
    >>> elector.observe(None, None, now=0.0)
    >>> elector.next_record(now=0.0, wall=datetime(2026, 1, 1, tzinfo=UTC)).holder
    'replica-a'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from confide.errors import UsageError

#: client-go's defaults (``leaderelection.LeaderElectionConfig``, as kube-controller-manager).
DEFAULT_LEASE_DURATION: Final = 15
DEFAULT_RENEW_DEADLINE: Final = 10.0
DEFAULT_RETRY_PERIOD: Final = 2.0
#: client-go's ``JitterFactor``: the renew deadline must exceed this many retry periods.
JITTER_FACTOR: Final = 1.2
#: Bounds of the timing (a lease of hours would leave apps unsupervised that long).
MAX_LEASE_DURATION: Final = 3600
#: Longest holder identity written (the API's limit on a Lease's holder is not stated;
#: ours: a pod name, 253, plus a separator and a 32-digit suffix).
MAX_IDENTITY: Final = 300


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """How long a Lease lasts and how the leader keeps it. Seconds."""

    #: How long candidates wait, after they last saw the record change, to take over.
    lease_duration: int = DEFAULT_LEASE_DURATION
    #: How long the leader leads after the start of its last successful renewal.
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    #: Between attempts to acquire or renew.
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        if isinstance(self.lease_duration, bool) or not isinstance(self.lease_duration, int):
            raise UsageError("the lease duration is whole seconds (leaseDurationSeconds)")
        if not 0 < self.lease_duration <= MAX_LEASE_DURATION:
            raise UsageError(
                f"the lease duration must be in 1..{MAX_LEASE_DURATION} s, "
                f"got {self.lease_duration}"
            )
        if not self.renew_deadline < self.lease_duration:
            raise UsageError(
                f"the renew deadline ({self.renew_deadline:g} s) must be shorter than the "
                f"lease duration ({self.lease_duration} s): else a deposed leader may still "
                "act when another takes over"
            )
        if not 0 < JITTER_FACTOR * self.retry_period < self.renew_deadline:
            raise UsageError(
                f"the retry period ({self.retry_period:g} s) must be positive and under "
                f"1/{JITTER_FACTOR:g} of the renew deadline ({self.renew_deadline:g} s)"
            )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A Lease's ``spec``, as client-go's ``LeaderElectionRecord``."""

    #: ``""``: nobody holds it (released).
    holder: str
    duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    @classmethod
    def of(cls, spec: LeaseSpec | None) -> LeaseRecord:
        """The record of a Lease read from the API (missing fields: none held, no time)."""
        if spec is None:
            return cls("", 0, None, None, 0)
        return cls(
            holder=spec.holderIdentity or "",
            duration_seconds=max(spec.leaseDurationSeconds or 0, 0),
            acquire_time=spec.acquireTime,
            renew_time=spec.renewTime,
            transitions=max(spec.leaseTransitions or 0, 0),
        )

    def spec(self) -> LeaseSpec:
        return LeaseSpec(
            holderIdentity=self.holder or None,
            leaseDurationSeconds=self.duration_seconds,
            acquireTime=self.acquire_time,
            renewTime=self.renew_time,
            leaseTransitions=self.transitions,
        )


class LeaderElector:
    """The election's decisions for one candidate (pure; see the module's description).

    One round: :meth:`observe` what was read (``None``: no Lease yet), then
    :meth:`next_record` says what to write (``None``: wait, another holds it); after
    a successful write, :meth:`written` with the time the round *started*.
    :meth:`leading` is the only answer to "may I supervise now?".
    """

    def __init__(self, identity: str, timing: LeaseTiming) -> None:
        if not identity or len(identity) > MAX_IDENTITY:
            raise UsageError(f"a candidate's identity has 1 to {MAX_IDENTITY} characters")
        self.identity = identity
        self.timing = timing
        self._observed: LeaseRecord | None = None
        #: When (our monotonic clock) the observed record last changed.
        self._observed_at = 0.0
        self._version: str | None = None
        #: Leading until this monotonic time (None: not leading).
        self._until: float | None = None

    @property
    def version(self) -> str | None:
        """The resourceVersion the next write must name (``None``: create the Lease)."""
        return self._version

    @property
    def observed(self) -> LeaseRecord | None:
        return self._observed

    def observe(self, record: LeaseRecord | None, version: str | None, *, now: float) -> None:
        """What a read of the Lease found, at monotonic time ``now`` (after the read)."""
        if record != self._observed or self._observed is None:
            self._observed = record
            self._observed_at = now
        self._version = version
        if record is not None and record.holder != self.identity:
            self._until = None  # deposed, or never leader: stop at once

    def expires_at(self) -> float | None:
        """When (monotonic) another's hold may be taken over; ``None``: nothing to wait for."""
        record = self._observed
        if record is None or not record.holder or record.holder == self.identity:
            return None
        return self._observed_at + record.duration_seconds

    def next_record(self, *, now: float, wall: datetime) -> LeaseRecord | None:
        """The record to write now (acquire or renew), or ``None`` while another holds it."""
        if wall.tzinfo is None:
            raise UsageError("the election's wall clock must be timezone-aware")
        record = self._observed
        expiry = self.expires_at()
        if expiry is not None and now < expiry:
            return None
        if record is None:
            return LeaseRecord(self.identity, self.timing.lease_duration, wall, wall, 0)
        if record.holder == self.identity:
            return replace(
                record,
                duration_seconds=self.timing.lease_duration,
                renew_time=wall,
                acquire_time=record.acquire_time or wall,
            )
        return LeaseRecord(
            self.identity, self.timing.lease_duration, wall, wall, record.transitions + 1
        )

    def written(self, record: LeaseRecord, version: str | None, *, started: float) -> None:
        """Our write of ``record`` succeeded; the round had started at ``started``."""
        self._observed = record
        self._observed_at = started
        self._version = version
        if record.holder == self.identity:
            self._until = started + self.timing.renew_deadline

    def leading(self, now: float) -> bool:
        """Whether this candidate may act as the leader at monotonic time ``now``."""
        return self._until is not None and now < self._until

    def leading_until(self) -> float | None:
        return self._until

    def resign(self) -> None:
        """Stop leading (before a release, or when the supervisor ended)."""
        self._until = None

    def release_record(self, *, wall: datetime) -> LeaseRecord | None:
        """The record that gives the Lease up (client-go's ``release``), if we hold it."""
        record = self._observed
        if record is None or record.holder != self.identity:
            return None
        return LeaseRecord("", 1, wall, wall, record.transitions)


#: What a lost or slow API server raises (a partition): the round fails, nothing else.
_API_FAILURES: Final = (ApiError, httpx2.TransportError, TimeoutError, OSError)


class LeaseElection:
    """Runs ``lead()`` only while this replica holds the Lease (see the module's description).

    ``lead`` is the supervisor's run: it is cancelled, not asked to finish, when the
    Lease is lost or at shutdown, so nothing it does can outlast the renew deadline
    by more than one event-loop step (a database write already in a worker thread
    completes; ADR 0023).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),  # noqa: B008 - frozen
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: logging.Logger | None = None,
    ) -> None:
        self._client = client
        self.name = name
        self.namespace = namespace
        self.elector = LeaderElector(identity, timing)
        self._wall = wall_clock
        self._log = logger or logging.getLogger("confide.operator.election")
        #: Times this replica started leading (tests, diagnostics).
        self.terms = 0

    @property
    def identity(self) -> str:
        return self.elector.identity

    async def _round(self, loop: asyncio.AbstractEventLoop) -> None:
        """One try to acquire or renew (client-go's ``tryAcquireOrRenew``)."""
        started = loop.time()
        try:
            lease: Lease | None = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            lease = None
        version = lease.metadata.resourceVersion if lease and lease.metadata else None
        self.elector.observe(
            LeaseRecord.of(lease.spec) if lease is not None else None, version, now=loop.time()
        )
        record = self.elector.next_record(now=loop.time(), wall=self._wall())
        if record is None:
            return
        # The version read: the write is refused (409) if anyone wrote in between.
        meta = ObjectMeta(name=self.name, namespace=self.namespace, resourceVersion=version)
        body = Lease(metadata=meta, spec=record.spec())
        try:
            if lease is None:
                done = await self._client.create(body)  # 409 AlreadyExists if one was
            else:
                done = await self._client.replace(body)  # 409 Conflict if it changed
        except ApiError as exc:
            if exc.status.code == 409:
                self._log.info("lease %s: another replica wrote it first", self.name)
                return
            raise
        self.elector.written(
            record, done.metadata.resourceVersion if done.metadata else None, started=started
        )

    async def run(
        self,
        lead: Callable[[], Coroutine[Any, Any, None]],
        shutdown_trigger: Callable[[], Awaitable[object]],
    ) -> None:
        """Compete for the Lease and lead while held, until ``shutdown_trigger()`` returns."""
        loop = asyncio.get_running_loop()
        timing = self.elector.timing
        stopping = asyncio.ensure_future(shutdown_trigger())
        leader: asyncio.Task[None] | None = None
        try:
            while not stopping.done():
                until = self.elector.leading_until()
                bound = (until - loop.time()) if until is not None else timing.renew_deadline
                try:
                    async with asyncio.timeout(max(bound, 0.0)):
                        await self._round(loop)
                except _API_FAILURES as exc:
                    self._log.warning("lease %s: %s", self.name, _why(exc))
                now = loop.time()
                if self.elector.leading(now):
                    if leader is None:
                        self.terms += 1
                        self._log.info("lease %s: %s leads", self.name, self.identity)
                        leader = asyncio.create_task(lead())
                elif leader is not None:
                    await _cancel(leader)
                    leader = None
                    self._log.warning(
                        "lease %s: %s lost the lease; stopped supervising", self.name, self.identity
                    )
                wait = timing.retry_period
                until = self.elector.leading_until()
                if until is not None:
                    wait = min(wait, until - now)
                expiry = self.elector.expires_at()
                if expiry is not None:
                    wait = min(wait, max(expiry - now, 0.0) + 0.01)
                watched: set[asyncio.Future[Any]] = {stopping}
                if leader is not None:
                    watched.add(leader)
                await asyncio.wait(watched, timeout=max(wait, 0.0), return_when="FIRST_COMPLETED")
                if leader is not None and leader.done():
                    leader.result()  # the supervisor failed: raise its error
                    raise RuntimeError("the supervisor returned while it led")
        finally:
            stopping.cancel()
            try:
                if leader is not None:
                    await _cancel(leader)  # raises what the supervisor failed with, if it did
            finally:
                await self._release(loop)

    async def aclose(self) -> None:
        """Close the API client (when the election owns it)."""
        await self._client.close()

    async def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the Lease up if we hold it, so the next replica need not wait it out."""
        was_leading = self.elector.leading(loop.time())
        self.elector.resign()
        record = self.elector.release_record(wall=self._wall())
        if not was_leading or record is None:
            return
        body = Lease(
            metadata=ObjectMeta(
                name=self.name, namespace=self.namespace, resourceVersion=self.elector.version
            ),
            spec=record.spec(),
        )
        try:
            async with asyncio.timeout(self.elector.timing.retry_period):
                await self._client.replace(body)
        except _API_FAILURES as exc:
            self._log.warning("lease %s: not released (%s); it expires", self.name, _why(exc))
            return
        self._log.info("lease %s: released by %s", self.name, self.identity)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it ended (our own cancellation still propagates)."""
    task.cancel()
    await asyncio.wait({task})
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status.code} {exc.status.reason}: {exc.status.message}"
    if isinstance(exc, TimeoutError):
        return "the API server did not answer in time"
    return f"{exc.__class__.__name__}: {exc}"
