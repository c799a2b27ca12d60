"""An operator run in this process (`run_operator` in a thread), recording what it relays."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from confide.operator import (
    Database,
    OperatorAddresses,
    OperatorSettings,
    SupervisorOptions,
    create_token,
    run_operator,
    utc_now,
)
from confide.operator._router import Direction
from confide.runtime import runtime_code_hash
from support.operators import (
    BASE_DOMAIN,
    kill_runtimes,
)
from support.runtimes import DEADLINE


@dataclass
class Recording:
    """Every chunk the router relayed (appended on the operator's loop, read once it is idle)."""

    chunks: list[tuple[int, Direction, bytes]] = field(default_factory=list)

    def record(self, connection: int, direction: Direction, data: bytes) -> None:
        self.chunks.append((connection, direction, data))

    def seen(self, direction: Direction | None = None) -> bytes:
        return b"".join(d for _, way, d in list(self.chunks) if direction in (None, way))

    def clear(self) -> None:
        self.chunks.clear()


@dataclass
class InProcessOperator:
    addresses: OperatorAddresses
    settings: OperatorSettings
    recording: Recording
    token: str

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def router_port(self) -> int:
        return self.addresses.router_port

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.addresses.api_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )


@contextmanager
def operator_in_thread(data_dir: Path) -> Iterator[InProcessOperator]:
    settings = OperatorSettings.load(
        data_dir,
        runtime_sha256=runtime_code_hash(),
        api_port=0,
        router_port=0,
        base_domain=BASE_DOMAIN,
    )
    recording = Recording()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    found: list[OperatorAddresses] = []
    failure: list[BaseException] = []

    def on_ready(addresses: OperatorAddresses) -> None:
        found.append(addresses)
        ready.set()

    def run() -> None:
        try:
            loop.run_until_complete(
                run_operator(
                    settings,
                    shutdown_trigger=stop.wait,
                    options=SupervisorOptions(stop_apps_on_exit=True, probe_interval=0.1),
                    recorder=recording,
                    on_ready=on_ready,
                )
            )
        except BaseException as exc:  # reported below, not lost in the thread
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="operator", daemon=True)
    thread.start()
    try:
        assert ready.wait(DEADLINE), "the operator did not start"
        if failure:
            raise failure[0]
        db = Database.open(settings.database_url)
        try:
            with db.session() as session:
                token = create_token(session, "carol", now=utc_now()).token
                session.commit()
        finally:
            db.dispose()
        yield InProcessOperator(found[0], settings, recording, token)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        alive = thread.is_alive()
        if not alive:
            loop.close()
        kill_runtimes(data_dir)
        assert not alive, "the operator did not stop"
        if failure:
            raise failure[0]
