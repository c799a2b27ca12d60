"""The wheels' init container of a Kubernetes pod (``WHEELS_SCRIPT``, ADR 0030), run with this
interpreter against a local HTTP server (port 0) that answers as the blob endpoint may.

It is only a transport: it writes what it is sent under the locked hash's name (the runtime
checks each wheel), retries a 429 or 503 after its ``Retry-After``, and stops with one
``error:`` line on anything else, on a malformed digest, past either size bound or past its
deadline. Each row of the table names the line it must print.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest

from confide.operator._kubernetes import WHEELS_SCRIPT, wheels_fetch_arguments
from support.kube_pods import TARGET
from support.wheels import lock_of, wheel_bytes

ONE: Final = wheel_bytes("one", "1.0")
TWO: Final = wheel_bytes("two", "1.0")


Answer = tuple[int, bytes, dict[str, str]]
#: A header of a 200 answer asking the test server to send its body a byte every this many
#: seconds (sent too: the fetcher ignores it).
TRICKLE: Final = "X-Test-Trickle"


@contextmanager
def serving(answers: dict[str, list[Answer]], seen: list[str] | None = None) -> Iterator[str]:
    """A server answering ``/<sha256>`` from ``answers`` (each path's list in turn, its last
    answer repeated), recording each name asked in ``seen``; the base URL."""
    asked: list[str] = seen if seen is not None else []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            name = self.path.rsplit("/", 1)[-1]
            asked.append(name)
            queue = answers.get(name) or [(404, b"{}", {})]
            status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 200 or TRICKLE not in headers:
                self.wfile.write(body)
                return
            # A sender that trickles: one byte at a time, each within the fetcher's read
            # timeout, for longer than its deadline in all.
            pause = float(headers[TRICKLE])
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:
                pass  # the fetcher gave up

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/blobs"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(
    url: str,
    out: Path,
    digests: list[str],
    *,
    one: int = 1 << 20,
    total: int = 1 << 20,
    deadline: int = 60,
) -> subprocess.CompletedProcess[str]:
    argv = [url, str(out), str(one), str(total), str(deadline), "1", *digests]
    return subprocess.run(  # noqa: S603 - the pod's own program
        [sys.executable, "-I", "-c", WHEELS_SCRIPT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _at(out: Path, digest: str) -> Path:
    return out / digest[:2] / digest[2:]


def test_the_arguments_name_every_locked_file_by_hash() -> None:
    lock = lock_of(("one", "1.0", ONE), ("two", "1.0", TWO))
    args = wheels_fetch_arguments(TARGET, lock, Path("/wheels"))
    assert args[:2] == [TARGET.blob_url, "/wheels"]
    assert args[6:] == [_hex(ONE), _hex(TWO)]


def test_every_wheel_is_written_under_its_locked_name_after_a_shed_answer(tmp_path: Path) -> None:
    answers: dict[str, list[Answer]] = {
        _hex(ONE): [(429, b"busy", {"Retry-After": "1"}), (200, ONE, {})],
        _hex(TWO): [(200, TWO, {})],
    }
    seen: list[str] = []
    with serving(answers, seen) as url:
        done = fetch(url, tmp_path, [_hex(ONE), _hex(TWO)])
    assert done.returncode == 0, done.stderr
    assert _at(tmp_path, _hex(ONE)).read_bytes() == ONE
    assert _at(tmp_path, _hex(TWO)).read_bytes() == TWO
    assert seen == [_hex(ONE), _hex(ONE), _hex(TWO)]  # the shed one asked again
    assert not list(tmp_path.rglob("*.tmp"))


def test_it_checks_no_hash_the_runtime_does(tmp_path: Path) -> None:
    """Another file under the locked name is written as sent: the trust decision is the
    runtime's (requirements.hash_mismatch), which reports both hashes."""
    with serving({_hex(ONE): [(200, TWO, {})]}) as url:
        done = fetch(url, tmp_path, [_hex(ONE)])
    assert done.returncode == 0, done.stderr
    assert _at(tmp_path, _hex(ONE)).read_bytes() == TWO


REFUSALS: Final[dict[str, tuple[dict[str, list[Answer]], list[str], dict[str, int], str]]] = {
    "not found": ({}, [_hex(ONE)], {}, "HTTP 404"),
    "not a digest": ({}, ["../../etc/passwd"], {}, "is not a SHA-256"),
    "uppercase digest": ({}, [_hex(ONE).upper()], {}, "is not a SHA-256"),
    "one too large": (
        {_hex(ONE): [(200, ONE, {})]},
        [_hex(ONE)],
        {"one": len(ONE) - 1},
        "is larger than",
    ),
    "all too large": (
        {_hex(ONE): [(200, ONE, {})], _hex(TWO): [(200, TWO, {})]},
        [_hex(ONE), _hex(TWO)],
        {"total": len(ONE) + len(TWO) - 1},
        "is larger than",
    ),
    "shed past the deadline": (
        {_hex(ONE): [(503, b"", {"Retry-After": "1"})]},
        [_hex(ONE)],
        {"deadline": 1},
        "not done after 1 s",
    ),
    # Review (ADR 0030): the deadline held only between requests; a body sent a byte at a
    # time, each within the read timeout, kept one request (and the pod's start) going.
    "trickled past the deadline": (
        {_hex(ONE): [(200, b"x" * 40, {TRICKLE: "0.25"})]},
        [_hex(ONE)],
        {"deadline": 1},
        "not done after 1 s",
    ),
    # A Retry-After that str.isdigit() takes but int() refuses ended in a traceback.
    "a Retry-After of non-ASCII digits": (
        {_hex(ONE): [(503, b"", {"Retry-After": "\u00b2"})]},
        [_hex(ONE)],
        {"deadline": 1},
        "not done after 1 s",
    ),
    "a Retry-After of too many digits": (
        {_hex(ONE): [(503, b"", {"Retry-After": "9" * 5000})]},
        [_hex(ONE)],
        {"deadline": 1},
        "not done after 1 s",
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals_are_one_error_line(case: str, tmp_path: Path) -> None:
    answers, digests, bounds, said = REFUSALS[case]
    with serving({k: list(v) for k, v in answers.items()}) as url:
        done = fetch(url, tmp_path / "out", digests, **bounds)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: fetching the wheels failed: ")
    assert said in lines[-1]
    assert "Traceback" not in done.stderr
    out = tmp_path / "out"
    complete = [p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.suffix != ".tmp"]
    # Only the wheels before the refused one were written whole; nothing under its name.
    assert complete == [Path(d[:2]) / d[2:] for d in digests[:-1]]
