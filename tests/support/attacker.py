"""An attacker with no account: floods of connections that cost it nothing and stall.

Run as a separate process (``python tests/support/attacker.py ...``) so its
event loop competes with the system under test only as a real attacker's
would, and its sockets come from its own source address (any ``127.0.0.0/8``
address reaches a loopback listener on Linux).

Attacks:

- ``stall-handshakes``: keep ``--count`` connections open, each sending one
  valid ClientHello for ``--name`` and then nothing (a TLS handshake that never
  ends); every connection the server closes is opened again at once.
- ``idle``: keep ``--count`` connections open that send nothing at all.

Every second it prints one JSON line on stdout: ``{"open": N, "opened": N,
"closed": N}`` (connections open now, opened and closed so far); it stops
after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Pause before reopening when connecting fails (refused, reset), seconds.
RETRY_PAUSE = 0.05


def client_hello(server_name: str) -> bytes:
    """The first flight of a real TLS client for ``server_name`` (made by OpenSSL)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # never completed: nothing is ever verified or sent
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@dataclass
class Counts:
    open: int = 0
    opened: int = 0
    closed: int = 0


async def hold_one(
    host: str, port: int, source: str, first: bytes, counts: Counts, stop: asyncio.Event
) -> None:
    """One slot: a connection that sends ``first`` and stalls, reopened whenever it ends."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(RETRY_PAUSE)
            continue
        counts.open += 1
        counts.opened += 1
        try:
            if first:
                writer.write(first)
            while not stop.is_set():  # read (and drop) whatever comes, until the server closes
                if not await reader.read(65536):
                    break
        except OSError:
            pass
        finally:
            counts.open -= 1
            counts.closed += 1
            writer.transport.abort()


async def attack(args: argparse.Namespace) -> None:
    first = client_hello(args.name) if args.attack == "stall-handshakes" else b""
    stop = asyncio.Event()
    counts = Counts()
    slots = [
        asyncio.create_task(hold_one(args.host, args.port, args.source, first, counts, stop))
        for _ in range(args.count)
    ]
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        await asyncio.sleep(min(1.0, max(end - time.monotonic(), 0)))
        print(json.dumps(counts.__dict__), flush=True)
    stop.set()
    for slot in slots:
        slot.cancel()
    await asyncio.gather(*slots, return_exceptions=True)


def launch(
    attack: str,
    *,
    host: str,
    port: int,
    source: str,
    count: int,
    duration: float,
    name: str = "",
) -> subprocess.Popen[str]:
    """Start this attacker in its own process; its reports come on its stdout, one a line."""
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            attack,
            *("--host", host, "--port", str(port), "--source", source, "--name", name),
            *("--count", str(count), "--duration", str(duration)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("attack", choices=("stall-handshakes", "idle"))
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", required=True, help="the attacker's own address")
    parser.add_argument("--name", default="", help="the server name its ClientHellos ask for")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    asyncio.run(attack(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
