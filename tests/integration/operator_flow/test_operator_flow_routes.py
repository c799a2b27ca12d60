"""The router's route table as the supervisor keeps it: names, modes, owner domains."""

from __future__ import annotations

import uuid

import pytest

from confide.operator import AppRoutes
from confide.operator._router import Route, RouteMode
from confide.wire import TlsMode

BASE = "apps.example"


@pytest.mark.parametrize(
    ("tls", "running", "mode"),
    [
        (TlsMode.RATLS, False, RouteMode.PASSTHROUGH),
        (TlsMode.RATLS, True, RouteMode.PASSTHROUGH),
        (TlsMode.OWNER, True, RouteMode.PASSTHROUGH),
        # The configuration endpoint is RA-TLS: it must reach the owner unterminated.
        (TlsMode.OPERATOR, False, RouteMode.PASSTHROUGH),
        (TlsMode.OPERATOR, True, RouteMode.TERMINATE),
    ],
)
def test_mode_by_tls_and_status(tls: TlsMode, running: bool, mode: RouteMode) -> None:
    routes = AppRoutes(BASE)
    app_id = uuid.uuid4()
    routes.publish(app_id, tls, None, "127.0.0.1", 4000, running=running)
    assert routes.lookup(f"{app_id}.{BASE}") == Route(mode, "127.0.0.1", 4000)


def test_unknown_and_non_canonical_names_are_not_routed() -> None:
    routes = AppRoutes(BASE)
    app_id = uuid.uuid4()
    routes.publish(app_id, TlsMode.RATLS, None, "127.0.0.1", 4000, running=True)
    assert routes.lookup(f"{app_id}.{BASE}") is not None
    assert routes.lookup(f"{str(app_id).upper()}.{BASE}") is not None  # SNI is case-insensitive
    for name in (
        f"{app_id.hex}.{BASE}",  # another spelling of the same UUID
        f"{uuid.uuid4()}.{BASE}",
        f"{app_id}.other.example",
        BASE,
        f"x.{app_id}.{BASE}",
        "",
    ):
        assert routes.lookup(name) is None, name
    routes.withdraw(app_id)
    assert routes.lookup(f"{app_id}.{BASE}") is None
    assert routes.routes() == {}


def test_owner_domains() -> None:
    routes = AppRoutes(BASE)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    routes.publish(first, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4001, running=True)
    assert routes.lookup("shop.example.com") == Route(RouteMode.PASSTHROUGH, "127.0.0.1", 4001)
    assert routes.lookup("SHOP.example.com.") is not None
    # A second app claiming the same domain does not take it over.
    routes.publish(second, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4002, running=True)
    assert routes.lookup("shop.example.com") == Route(RouteMode.PASSTHROUGH, "127.0.0.1", 4001)
    assert routes.lookup(f"{second}.{BASE}") is not None
    # A domain under the base domain would shadow an app's own name: never routed.
    victim = uuid.uuid4()
    routes.publish(third, TlsMode.OWNER, f"{victim}.{BASE}", "127.0.0.1", 4003, running=True)
    assert routes.lookup(f"{victim}.{BASE}") is None
    # Only owner-mode apps get their domain routed.
    routes.publish(victim, TlsMode.RATLS, "other.example.com", "127.0.0.1", 4004, running=True)
    assert routes.lookup("other.example.com") is None
    # Once the holder goes, the domain is free again.
    routes.withdraw(first)
    assert routes.lookup("shop.example.com") is None
    routes.publish(second, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4002, running=True)
    assert routes.lookup("shop.example.com") == Route(RouteMode.PASSTHROUGH, "127.0.0.1", 4002)


def test_a_refused_domain_is_logged_once_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    """The supervisor publishes at every probe: the refusal must not be logged each time."""
    routes = AppRoutes(BASE)
    holder, other, under = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    routes.publish(holder, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4001, running=True)

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not routed" in r.getMessage()]

    with caplog.at_level("WARNING", logger="confide.operator.routes"):
        for _ in range(50):
            routes.publish(
                other, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4002, running=True
            )
            routes.publish(under, TlsMode.OWNER, f"x.{BASE}", "127.0.0.1", 4003, running=False)
        assert len(refusals()) == 2
        assert f"already routed to app {holder}" in refusals()[0]
        # A new holder is a new conflict: told once more.
        routes.withdraw(holder)
        third = uuid.uuid4()
        routes.publish(third, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4004, running=True)
        for _ in range(10):
            routes.publish(
                other, TlsMode.OWNER, "shop.example.com", "127.0.0.1", 4002, running=True
            )
        assert len(refusals()) == 3 and f"already routed to app {third}" in refusals()[2]
