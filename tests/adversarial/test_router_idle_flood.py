"""One source fills the router with idle connections (issue 9, point 2).

Before fair admission, 512 idle connections from one address took every slot
the router keeps for connections not yet routed, and 48 of 50 legitimate
handshakes were reset. Now each source has a share of those slots (and a rate
of new connections): while 127.0.0.2 keeps :data:`IDLE` connections open (and
reopens each one the router closes), every handshake of a client at 127.0.0.1
succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest

from confide.attestation import fetch_peer_certificate
from support.attacker import launch
from support.operators import (
    OperatorProcess,
    create_token,
    deploy,
    package,
    wait_status,
)
from support.runtimes import (
    HOST,
    poll,
)

pytestmark = pytest.mark.slow

ATTACKER_SOURCE: Final = "127.0.0.2"
#: Idle connections the attacker keeps open: more than the router's 512 unrouted slots.
IDLE: Final = 600
HANDSHAKES: Final = 50


def test_a_flood_of_idle_connections_from_one_source_keeps_no_one_out(
    operator: OperatorProcess, tmp_path: Path
) -> None:
    token = create_token(operator.data_dir, "victim")
    with operator.client(token) as api:
        app = deploy(api, package(tmp_path), name="idle")
        wait_status(api, app.id, "initializing")

    with launch(
        "idle",
        host=HOST,
        port=operator.router_port,
        source=ATTACKER_SOURCE,
        count=IDLE,
        duration=15,
    ) as attacker:
        try:

            def flooding() -> bool:
                line = attacker.stdout.readline() if attacker.stdout else ""
                return bool(line) and json.loads(line)["opened"] >= IDLE

            poll(flooding, "the attacker to open its connections")
            failures = []
            for _ in range(HANDSHAKES):
                try:
                    fetch_peer_certificate(
                        HOST, operator.router_port, server_name=app.name, timeout=10.0
                    )
                except Exception as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(repr(exc))
            assert attacker.poll() is None, "the flood ended before the handshakes"
        finally:
            attacker.kill()
    assert not failures, f"{len(failures)} of {HANDSHAKES} handshakes failed: {failures[:3]}"
