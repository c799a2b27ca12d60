"""A zero-trust app deployed on an operator subprocess, and ``confide proxy`` in front of it;
a relay the test can switch to an impostor TLS server in the enclave's place."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import threading
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
    OwnerPki,
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
    tmp: Path, app: ZeroTrustApp, *extra: str, connect: int | None = None
) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(tmp, app, *extra, connect=connect)
    try:
        proxy.wait_url()
        yield proxy
        assert proxy.stop() == 0, proxy.stderr
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.proc.wait(DEADLINE)


class Relay:
    """A TCP relay on 127.0.0.1 to a target the test can switch (dropping open connections)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._server = socket.create_server((HOST, 0))
        self.port: int = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def switch(self, target: int) -> None:
        with self._lock:
            self.target = target
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def close(self) -> None:
        self.switch(self.target)
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                upstream = socket.create_connection((HOST, self.target), timeout=DEADLINE)
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Impostor:
    """A TLS server with an ordinary (not RA-TLS) certificate, answering "Hello world" too."""

    def __init__(self, tmp: Path) -> None:
        pki = OwnerPki.generate()
        cert = pki.write_certificate(tmp / "impostor.pem")
        key = tmp / "impostor.key"
        key.write_text(pki.key_pem)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.load_cert_chain(cert, key)
        self._server = socket.create_server((HOST, 0))
        self.port: int = self._server.getsockname()[1]
        self.served = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            client.settimeout(DEADLINE)
            with self._context.wrap_socket(client, server_side=True) as tls:
                if tls.recv(65536):
                    self.served += 1
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello world")
