"""``host:port`` addresses: one type, one parser."""

from __future__ import annotations

from typing import NamedTuple

from confide.errors import UsageError


class HostPort(NamedTuple):
    """A host (a name or an IP address, IPv6 without brackets) and a TCP port; it unpacks
    as ``host, port``."""

    host: str
    port: int

    @classmethod
    def parse(
        cls, value: str, what: str = "the address", *, allow_port_zero: bool = False
    ) -> HostPort:
        """``host:port`` or ``[v6]:port``; port 0 (any free port) only with ``allow_port_zero``.

        Raises :class:`UsageError` naming ``what`` (e.g. an option) otherwise.
        """
        host, sep, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        low = 0 if allow_port_zero else 1
        if not sep or not host or not port.isdigit() or not low <= int(port) <= 65535:
            raise UsageError(f"{what} must be HOST:PORT with a port in {low}..65535, got {value!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
