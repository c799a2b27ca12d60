"""The runtime's admission books: who is shed, who is refused, and that the books balance.

Pure: no sockets, no clock. Each row of the table admits a sequence of
connections and says which of them end up shed, and whether the last one is
admitted; the guards check that every row really reached the limit it names.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import UsageError
from confide.runtime import ConnectionLimits, network_of, source_of
from confide.runtime._admission import (
    BODY_GRACE,
    MIN_BODY_RATE,
    Admission,
    BodyBudget,
    Ticket,
)

SMALL = ConnectionLimits(
    handshakes=4, handshakes_per_source=2, connections=6, connections_per_source=3
)
A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def admit_all(admission: Admission, sources: list[str]) -> list[Ticket | None]:
    return [admission.admit(source) for source in sources]


# (case, sources admitted in order, indexes of the handshakes done, expected shed indexes,
#  whether the last one is admitted)
CASES = [
    ("under every limit", [A, B], [], [], True),
    ("a source over its handshake share sheds its own oldest", [A, A, A], [], [0], True),
    ("the others' handshakes are never shed for it", [B, A, A, A], [], [1], True),
    ("all handshakes taken: the busiest source's oldest goes", [A, A, B, C, C], [], [0], True),
    ("a source over its connection share sheds a pending one", [A, A, A, A], [0], [1], True),
    (
        "a source at its connection share with none pending is refused",
        [A, A, A, A],
        [0, 1, 2],
        [],
        False,
    ),
    (
        "all connections taken, none pending: refused",
        [A, A, A, B, B, B, C],
        [0, 1, 2, 3, 4, 5],
        [],
        False,
    ),
    (
        "all connections taken: a pending one of the busiest goes (ties: seen first)",
        [A, A, A, B, B, C, C],
        [0, 1, 2, 3],
        [4],
        True,
    ),
]


@pytest.mark.parametrize(
    ("case", "sources", "done", "shed", "last_admitted"), CASES, ids=[c[0] for c in CASES]
)
def test_who_is_shed_and_who_is_refused(
    case: str, sources: list[str], done: list[int], shed: list[int], last_admitted: bool
) -> None:
    admission = Admission(SMALL)
    cut: list[int] = []
    tickets: list[Ticket | None] = []
    for index, source in enumerate(sources):
        ticket = admission.admit(source)
        tickets.append(ticket)
        if ticket is not None:
            ticket.on_shed = lambda index=index: cut.append(index)
            if index in done:
                ticket.handshake_done()
    assert cut == shed
    assert (tickets[-1] is not None) is last_admitted
    # Guards: the books balance, and stay within every limit.
    live = [t for t in tickets if t is not None and not t.closed]
    assert admission.open == len(live)
    assert admission.pending == sum(t.pending for t in live)
    assert admission.open <= SMALL.connections and admission.pending <= SMALL.handshakes
    for source in (A, B, C):
        assert admission.pending_from(source) <= SMALL.handshakes_per_source
        assert admission.open_from(source) <= SMALL.connections_per_source
    if not last_admitted:
        assert admission.refused_count == 1
    assert admission.shed_count == len(shed)


def test_a_relay_has_only_the_global_limits() -> None:
    """The operator's router relays many clients from one address (issue 9, review 4)."""
    admission = Admission(
        ConnectionLimits(
            handshakes=4,
            handshakes_per_source=2,
            connections=6,
            connections_per_source=3,
            relays=frozenset({A}),
        )
    )
    tickets = admit_all(admission, [A] * 6)
    assert all(t is not None for t in tickets)
    assert [t.closed for t in tickets if t is not None] == [True, True, False, False, False, False]
    assert admission.open_from(A) == 4 and admission.pending_from(A) == 4  # over both shares
    # Another source still has its shares: the relay's pending handshakes make room.
    others = admit_all(admission, [B, B])
    assert [t is not None and not t.closed for t in others] == [True, True]
    assert admission.pending_from(A) == 2


# (case, sources admitted in order, handshakes done, served connections idle, expected shed
#  indexes, whether the last one is admitted). Every handshake is done before the last one.
DISPLACE_CASES = [
    (
        "all taken, none pending: the busiest source's oldest idle connection goes",
        [A, A, A, B, B, C, C],
        [0, 1, 2, 3, 4, 5],
        [0, 1, 2, 3, 4, 5],
        [0],
        True,
    ),
    (
        "a connection running a request is not shed",
        [A, A, A, B, B, C, C],
        [0, 1, 2, 3, 4, 5],
        [2, 3],
        [2],
        True,
    ),
    (
        "the busiest with no idle one: the next that holds two more gives one",
        [A, A, A, B, B, B, C],
        [0, 1, 2, 3, 4, 5],
        [4, 5],
        [4],
        True,
    ),
    (
        "no source holds two more than the newcomer's: refused",
        [A, A, B, B, C, C, C],
        [0, 1, 2, 3, 4, 5],
        [0, 1, 2, 3, 4, 5],
        [],
        False,
    ),
    (
        "a source at its own share is refused, its idle connections kept",
        [A, A, A, A],
        [0, 1, 2],
        [0, 1, 2],
        [],
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "sources", "done", "idle", "shed", "last_admitted"),
    DISPLACE_CASES,
    ids=[c[0] for c in DISPLACE_CASES],
)
def test_at_the_limits_a_newcomer_takes_the_place_of_an_idle_connection(
    case: str,
    sources: list[str],
    done: list[int],
    idle: list[int],
    shed: list[int],
    last_admitted: bool,
) -> None:
    admission = Admission(SMALL)
    cut: list[int] = []
    tickets: list[Ticket | None] = []
    for index, source in enumerate(sources):
        ticket = admission.admit(source)
        tickets.append(ticket)
        assert ticket is not None or index == len(sources) - 1  # guard: only the last may fail
        if ticket is not None and index in done:
            ticket.handshake_done()
            ticket.idle = lambda index=index: index in idle
            ticket.on_shed = lambda index=index: cut.append(index)
    assert cut == shed
    assert (tickets[-1] is not None) is last_admitted
    # Guards: the last one came at a limit, with no handshake pending to shed instead.
    assert len(sources) - 1 in (SMALL.connections, SMALL.connections_per_source)
    assert admission.pending == (1 if last_admitted else 0)
    assert admission.open <= SMALL.connections
    assert admission.shed_count == len(shed)
    for index in shed:
        victim = tickets[index]
        assert victim is not None and victim.closed


def test_the_body_budget_is_never_overdrawn() -> None:
    budget = BodyBudget(100)
    first = budget.hold(60, now=0.0)
    assert first is not None
    assert budget.hold(41, now=0.0) is None
    second = budget.hold(40, now=0.0)
    assert second is not None and not second.grow(1)
    assert budget.hold(-1, now=0.0) is None and budget.hold(101, now=0.0) is None
    first.release()
    first.release()
    assert budget.held == 40
    assert second.grow(60) and budget.held == 100 and second.size == 100
    assert budget.refused_count == 4
    with pytest.raises(UsageError):
        BodyBudget(0)


LATE = 10.0  # seconds after the holds below were taken
# (case, holds taken at 0 s as (size, bytes received, waiting for more), newcomer's size,
#  expected shed indexes, whether the newcomer gets its hold). Budget: 100 bytes.
SHED_CASES = [
    ("a stalled body is shed for a newcomer", [(60, 0, True)], 60, [0], True),
    (
        "a body at the minimum rate is kept",
        [(60, MIN_BODY_RATE * (LATE - BODY_GRACE), True)],
        60,
        [],
        False,
    ),
    ("a body the app is reading (not waiting) is kept", [(60, 0, False)], 60, [], False),
    (
        "the oldest stalled first, only as many as needed",
        [(30, 0, True), (30, 0, False), (30, 0, True), (10, 0, True)],
        60,
        [0, 2],
        True,
    ),
    (
        "shedding would not make room: nothing is shed",
        [(60, 0, True), (40, 0, False)],
        100,
        [],
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "holds", "size", "shed", "admitted"), SHED_CASES, ids=[c[0] for c in SHED_CASES]
)
def test_stalled_bodies_are_shed_for_a_newcomer(
    case: str,
    holds: list[tuple[int, float, bool]],
    size: int,
    shed: list[int],
    admitted: bool,
) -> None:
    budget = BodyBudget(100)
    cut: list[int] = []
    taken = []
    for index, (hold_size, received, waiting) in enumerate(holds):
        hold = budget.hold(hold_size, now=0.0)
        assert hold is not None  # guard: every hold fits
        hold.received = int(received)
        if waiting:
            hold.on_shed = lambda index=index: cut.append(index)
        taken.append(hold)
    newcomer = budget.hold(size, now=LATE)
    assert (newcomer is not None) is admitted
    if not admitted:
        assert budget.held + size > budget.limit  # guard: it did not fit
    assert cut == shed
    assert [i for i, hold in enumerate(taken) if hold.shed and hold.released] == shed
    assert budget.shed_count == len(shed)
    assert budget.held <= budget.limit
    # Within its grace, no body is slow.
    fresh = BodyBudget(100)
    early = fresh.hold(100, now=0.0)
    assert early is not None
    early.on_shed = lambda: None
    assert fresh.hold(1, now=BODY_GRACE) is None and not early.shed


def test_a_shed_connection_closed_later_is_counted_once() -> None:
    admission = Admission(SMALL)
    first, second, third = admit_all(admission, [A, A, A])
    assert first is not None and first.closed and second is not None and third is not None
    first.close()  # its transport ends later: nothing changes
    second.handshake_done()
    second.close()
    second.close()
    assert admission.open == 1 and admission.pending == 1 and admission.open_from(A) == 1


def test_a_ticket_shed_before_its_owner_could_cut_it_says_so() -> None:
    admission = Admission(SMALL)
    first, _, _ = admit_all(admission, [A, A, A])
    assert first is not None and first.on_shed is None and first.closed


def test_shed_pending_leaves_only_served_connections() -> None:
    admission = Admission(SMALL)
    tickets = admit_all(admission, [A, B, C])
    assert tickets[0] is not None
    tickets[0].handshake_done()
    admission.shed_pending()
    assert admission.pending == 0 and admission.open == 1


@pytest.mark.parametrize(
    ("address", "source"),
    [
        (("192.0.2.7", 443), "192.0.2.7"),
        (("::ffff:192.0.2.7", 443, 0, 0), "192.0.2.7"),
        (("2001:db8:1:2:3:4:5:6", 443, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 443, 0, 0), "2001:db8:1:2::/64"),
        (("fe80::1%eth0", 443, 0, 2), "fe80::/64"),
        ("/run/socket", "local"),
        ((), "local"),
    ],
)
def test_sources_are_ipv4_addresses_or_ipv6_slash_64s(address: object, source: str) -> None:
    assert source_of(address) == source


@pytest.mark.parametrize(
    "limits",
    [
        {"handshakes": 0},
        {"handshakes_per_source": 5, "handshakes": 4},
        {"connections_per_source": 7, "connections": 6},
        {"handshakes": 8, "connections": 6, "connections_per_source": 6},
    ],
)
def test_inconsistent_limits_are_refused(limits: dict[str, int]) -> None:
    values: dict[str, Any] = {
        "handshakes": 4,
        "handshakes_per_source": 2,
        "connections": 6,
        "connections_per_source": 3,
    } | limits
    with pytest.raises(UsageError):
        ConnectionLimits(**values)


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, C]), st.sampled_from(["admit", "done", "close"])),
        max_size=60,
    )
)
def test_the_books_always_balance(steps: list[tuple[str, str]]) -> None:
    admission = Admission(SMALL)
    tickets: list[Ticket] = []
    for source, action in steps:
        mine = [t for t in tickets if t.source == source and not t.closed]
        if action == "admit":
            ticket = admission.admit(source)
            if ticket is not None:
                tickets.append(ticket)
        elif mine and action == "done":
            mine[0].handshake_done()
        elif mine:
            mine[0].close()
        live = [t for t in tickets if not t.closed]
        assert admission.open == len(live) <= SMALL.connections
        assert admission.pending == sum(t.pending for t in live) <= SMALL.handshakes
        for s in (A, B, C):
            assert admission.open_from(s) == sum(t.source == s for t in live)
            assert admission.open_from(s) <= SMALL.connections_per_source
            assert admission.pending_from(s) <= SMALL.handshakes_per_source


@pytest.mark.parametrize(
    ("source", "network"),
    [
        ("2001:db8:0:7::/64", "2001:db8::/48"),
        ("2001:db8:ffff:ffff::/64", "2001:db8:ffff::/48"),
        ("192.0.2.7", "192.0.2.7"),
        ("local", "local"),
    ],
)
def test_networks_group_ipv6_sources_by_48(source: str, network: str) -> None:
    assert network_of(source) == network


def test_ipv6_sources_are_networks() -> None:
    assert isinstance(
        ipaddress.ip_network(source_of(("2001:db8::1", 1, 0, 0))), ipaddress.IPv6Network
    )
