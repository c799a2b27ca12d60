"""A zero-trust app deployed on an operator subprocess, and ``confide proxy`` in front of it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from confide.runtime import start_child
from support.operators import OperatorProcess
from support.runtimes import (
    CONFIDE,
    DEADLINE,
    HOST,
    poll,
)


@dataclass(frozen=True)
class ZeroTrustApp:
    operator: OperatorProcess
    api: httpx.Client
    data_dir: Path
    name: str
    app_id: str
    fingerprint: str


class ProxyProcess:
    """A running ``confide proxy`` on 127.0.0.1 port 0; its URL read from its ready file."""

    def __init__(
        self, tmp: Path, app: ZeroTrustApp, *extra: str, connect: int | None = None
    ) -> None:
        self.url = ""
        self.ready = tmp / f"proxy-{time.monotonic_ns()}.url"
        self.err_path = self.ready.with_suffix(".err")
        args = [
            str(CONFIDE),
            "proxy",
            app.name,
            "--listen",
            f"{HOST}:0",
            "--connect",
            f"{HOST}:{connect or app.operator.router_port}",
            "--operator",
            app.operator.api_url,
            "--allow-simulation",
            "--ready-file",
            str(self.ready),
            *extra,
        ]
        if "--fingerprint" not in extra:
            args += ["--fingerprint", app.fingerprint]
        with self.err_path.open("wb") as err:
            self.proc = start_child(args, env=None, output=err)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_url(self) -> str:
        poll(lambda: self.ready.is_file() or self.proc.poll() is not None, "the proxy to start")
        assert self.ready.is_file(), f"the proxy exited ({self.proc.returncode}):\n{self.stderr}"
        self.url = self.ready.read_text().strip()
        assert f"listening on {self.url}" in self.stderr
        return self.url

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(DEADLINE)
            raise


@contextlib.contextmanager
def proxy_running(
    tmp: Path, app: ZeroTrustApp, *, connect: int | None = None
) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(tmp, app, connect=connect)
    try:
        proxy.wait_url()
        yield proxy
        assert proxy.stop() == 0, proxy.stderr
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait(DEADLINE)
