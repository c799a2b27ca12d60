"""Read the server name (SNI) from a TLS ClientHello without terminating TLS.

The operator's router peeks at the first bytes of a connection, finds the
host name the client asked for, and routes on it; in passthrough mode it then
replays those bytes to the enclave untouched, so it never holds a key.

:func:`peek_client_hello` takes the bytes received so far and returns one of
three frozen results, never raising:

- :class:`NeedMore`: a valid prefix; read more bytes and call again;
- :class:`ClientHello`: the whole message was parsed (``server_name`` is
  ``None`` when the client sent no SNI);
- :class:`Rejected`: not a ClientHello we accept (malformed, over a limit,
  SNI that is not a DNS host name): the caller closes the connection.

The ClientHello may span several TLS records (up to :data:`MAX_HELLO_RECORDS`)
and arrive in any number of reads. Every length is checked against a named
limit before anything is buffered on its behalf, so a peer can never make the
caller hold more than :data:`MAX_PEEK_SIZE` bytes.

Example::

    >>> peek_client_hello(b"\\x16\\x03\\x01")
    NeedMore()
    >>> peek_client_hello(b"GET / HTTP/1.1\\r\\n")
    Rejected(reason='not a TLS handshake record (content type 0x47)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Largest TLS plaintext record fragment (RFC 8446 section 5.1: 2^14 bytes).
MAX_RECORD_SIZE: Final = 2**14
#: Largest ClientHello body accepted. Browsers send 0.5 to 2 KiB (post-quantum key
#: shares included); 16 KiB leaves room for large PSK identities.
MAX_HELLO_SIZE: Final = 16 * 1024
#: Most TLS records the ClientHello may be fragmented into.
MAX_HELLO_RECORDS: Final = 32
#: Most extensions in one ClientHello (browsers send about 20, GREASE included).
MAX_EXTENSIONS: Final = 64
#: Most bytes the caller may need to buffer before a result other than NeedMore.
MAX_PEEK_SIZE: Final = MAX_HELLO_SIZE + 4 + MAX_HELLO_RECORDS * 5
#: Longest DNS host name (RFC 1035 section 2.3.4, without the trailing dot).
MAX_HOST_NAME: Final = 253
#: Longest DNS label.
MAX_LABEL: Final = 63

_HANDSHAKE: Final = 22
_CLIENT_HELLO: Final = 1
_RECORD_HEADER: Final = 5
_HANDSHAKE_HEADER: Final = 4
_EXT_SERVER_NAME: Final = 0
_NAME_TYPE_HOST: Final = 0
_LDH: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes so far are a valid, incomplete prefix of a ClientHello."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The bytes are not a ClientHello the router accepts; close the connection."""

    #: What was wrong, for logs (never sent to the peer).
    reason: str


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A complete, well-formed ClientHello."""

    #: The SNI host name, lower case, without a trailing dot; ``None`` if absent.
    server_name: str | None
    #: Bytes of the records holding the ClientHello (a prefix of the input).
    size: int


PeekResult = NeedMore | Rejected | ClientHello


class _Malformed(Exception):
    """Internal: raised by the readers below, turned into :class:`Rejected`."""


class _Reader:
    """A bounds-checked cursor over a byte string."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise _Malformed(f"{what} runs past its enclosing length")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining(), "rest")

    def vector(self, length_size: int, what: str) -> _Reader:
        n = int.from_bytes(self.take(length_size, f"{what} length"), "big")
        return _Reader(self.take(n, what))


def parse_host_name(raw: bytes) -> str | None:
    """``raw`` as a lower-case DNS host name (LDH labels, no trailing dot), or ``None``.

    RFC 6066 section 3: the SNI ``HostName`` is an ASCII DNS name without a
    trailing dot; IDNs arrive as A-labels (``xn--...``), which are LDH.
    """
    if not 0 < len(raw) <= MAX_HOST_NAME:
        return None
    name = raw.lower()
    for label in name.split(b"."):
        if not 0 < len(label) <= MAX_LABEL or not _LDH.issuperset(label):
            return None
        if label[0] == 0x2D or label[-1] == 0x2D:  # no leading or trailing hyphen
            return None
    return name.decode("ascii")


def peek_client_hello(data: bytes) -> PeekResult:
    """Parse the ClientHello at the start of ``data`` (what a connection sent so far).

    Returns :class:`NeedMore`, :class:`Rejected` or :class:`ClientHello`;
    bytes after the ClientHello's last record are not looked at. Never raises.
    """
    try:
        return _peek(bytes(data))
    except _Malformed as exc:
        return Rejected(str(exc))


def _peek(data: bytes) -> PeekResult:
    handshake = bytearray()  # the fragments of the complete records so far
    pos = 0
    for _ in range(MAX_HELLO_RECORDS):
        header = data[pos : pos + _RECORD_HEADER]
        if len(header) < _RECORD_HEADER:
            _check_header_prefix(header, first=pos == 0)
            return NeedMore()
        length = int.from_bytes(header[3:5], "big")
        _check_record_header(header[0], header[1], header[2], length)
        fragment = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        hello_size = _check_hello_header(bytes(handshake[:4]) + fragment[:4])
        if hello_size is not None and len(handshake) + length > hello_size:
            # Checked on the header alone, so an oversized record is never waited for.
            raise _Malformed("a record carries data past the end of the ClientHello")
        if len(fragment) < length:
            return NeedMore()
        handshake += fragment
        pos += _RECORD_HEADER + length
        if hello_size is not None and len(handshake) == hello_size:
            return ClientHello(_parse_body(bytes(handshake[_HANDSHAKE_HEADER:])), pos)
    raise _Malformed(f"the ClientHello spans more than {MAX_HELLO_RECORDS} records")


def _check_header_prefix(prefix: bytes, *, first: bool) -> None:
    """Reject early on a partial record header that can already not be valid."""
    if prefix and prefix[0] != _HANDSHAKE:
        what = "" if first else " after the first record"
        raise _Malformed(f"not a TLS handshake record{what} (content type 0x{prefix[0]:02x})")
    if len(prefix) > 1 and prefix[1] != 3:
        raise _Malformed(f"unknown record version major 0x{prefix[1]:02x}")


def _check_record_header(content_type: int, major: int, minor: int, length: int) -> None:
    _check_header_prefix(bytes((content_type, major)), first=True)
    if minor > 4:
        raise _Malformed(f"unknown record version 0x03{minor:02x}")
    if length == 0:
        raise _Malformed("empty handshake record")  # RFC 8446 section 5.1
    if length > MAX_RECORD_SIZE:
        raise _Malformed(f"record of {length} bytes exceeds {MAX_RECORD_SIZE}")


def _check_hello_header(handshake: bytes) -> int | None:
    """The ClientHello's total size (header included), once its header is known."""
    if handshake and handshake[0] != _CLIENT_HELLO:
        raise _Malformed(f"first handshake message is type {handshake[0]}, not ClientHello")
    if len(handshake) < _HANDSHAKE_HEADER:
        return None
    length = int.from_bytes(handshake[1:4], "big")
    if length > MAX_HELLO_SIZE:
        raise _Malformed(f"ClientHello of {length} bytes exceeds {MAX_HELLO_SIZE}")
    return _HANDSHAKE_HEADER + length


def _parse_body(body: bytes) -> str | None:
    r = _Reader(body)
    major, minor = r.u8("legacy_version"), r.u8("legacy_version")
    if major != 3 or not 1 <= minor <= 4:
        raise _Malformed(f"ClientHello version 0x{major:02x}{minor:02x} is not TLS")
    r.take(32, "random")
    if r.vector(1, "legacy_session_id").remaining() > 32:
        raise _Malformed("legacy_session_id is over 32 bytes")
    suites = r.vector(2, "cipher_suites").remaining()
    if suites == 0 or suites % 2:
        raise _Malformed(f"cipher_suites of {suites} bytes is not a non-empty list of pairs")
    if r.vector(1, "legacy_compression_methods").remaining() == 0:
        raise _Malformed("no compression methods")
    if r.remaining() == 0:
        return None  # no extensions at all (TLS 1.2 allows it)
    extensions = r.vector(2, "extensions")
    if r.remaining():
        raise _Malformed(f"{r.remaining()} bytes follow the extensions")
    seen: set[int] = set()
    server_name: str | None = None
    while extensions.remaining():
        if len(seen) == MAX_EXTENSIONS:
            raise _Malformed(f"more than {MAX_EXTENSIONS} extensions")
        ext_type = extensions.u16("extension type")
        ext_data = extensions.vector(2, "extension data")
        if ext_type in seen:
            raise _Malformed(f"extension {ext_type} appears twice")  # RFC 8446 section 4.2
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            server_name = _parse_server_name(ext_data)
    return server_name


def _parse_server_name(ext: _Reader) -> str:
    names = ext.vector(2, "server_name_list")
    if ext.remaining():
        raise _Malformed("bytes follow the server_name_list")
    # RFC 6066 section 3: at most one name per type, and host_name is the only type;
    # an unknown type cannot even be skipped reliably, so one host_name is all we take.
    if names.u8("name_type") != _NAME_TYPE_HOST:
        raise _Malformed("the server name is not a host_name")
    raw = names.vector(2, "host_name").rest()
    if names.remaining():
        raise _Malformed("more than one server name")
    host = parse_host_name(raw)
    if host is None:
        raise _Malformed("the SNI host_name is not a DNS host name")
    return host
