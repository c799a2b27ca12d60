"""TDX measurement registers: the RTMR3 event log of a launch, and the policy that checks a TD.

A TD's MRTD and RTMR0-2 measure the guest image (firmware, kernel, command
line, initrd): they are compared with the reference values of the Confide
guest image. RTMR3 is left to the guest: Confide's runtime extends it with
exactly one event, the launch manifest, before it makes any quote (ADR 0020).

Format of the event log (JSON, as :meth:`TdxEventLog.to_json` writes it)::

    {"format": "confide-tdx-event-log", "version": 1,
     "events": [{"rtmr": 3, "type": "confide/launch-manifest/v1",
                 "data": "<hex: the launch manifest's measurement>",
                 "digest": "<hex: SHA-384(type || 0x00 || data)>"}]}

Replaying it starts from 48 zero bytes and, for each event of ``rtmr`` 3, sets
``RTMR3 = SHA-384(RTMR3 || digest)``, as the TDX module's TDG.MR.RTMR.EXTEND
does. The verifier recomputes each digest from its data (a digest is never
trusted as given) and accepts a log only if it is exactly the one launch event.

Format of a guest image's reference values (JSON, as :meth:`TdReference.to_json`
writes it; the operator publishes it with the image, users pin it)::

    {"format": "confide-td-reference", "version": 1,
     "mr_td": "<96 hex>", "rtmr0": "<96 hex>", "rtmr1": "<96 hex>", "rtmr2": "<96 hex>"}

Exactly these keys; lower-case hex of 48 bytes each; at most
:data:`MAX_TD_REFERENCE_SIZE` bytes.

Example::

    >>> log = TdxEventLog.for_launch(bytes(32))
    >>> log.replay() == launch_rtmr3(bytes(32))
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from confide import strictjson
from confide.errors import FormatError, JsonError, PolicyError

from ._policy import Policy

#: Bytes of a TDX measurement register (SHA-384).
RTMR_SIZE: Final = 48
#: The type of the one event Confide extends into RTMR3: the launch manifest's measurement.
LAUNCH_EVENT_TYPE: Final = "confide/launch-manifest/v1"
#: Most events an event log may hold, and the largest log accepted.
MAX_EVENTS: Final = 16
MAX_EVENT_LOG_SIZE: Final = 16 * 1024
_MAX_EVENT_DATA: Final = 256
_FORMAT: Final = "confide-tdx-event-log"
#: Largest reference values file read.
MAX_TD_REFERENCE_SIZE: Final = 4 * 1024
_REFERENCE_FORMAT: Final = "confide-td-reference"
_REFERENCE_KEYS: Final = ("mr_td", "rtmr0", "rtmr1", "rtmr2")


def extend_rtmr(register: bytes, digest: bytes) -> bytes:
    """``SHA-384(register || digest)``: one extend of a 48-byte RTMR by a 48-byte digest."""
    if len(register) != RTMR_SIZE or len(digest) != RTMR_SIZE:
        raise ValueError(f"an RTMR and its digest are {RTMR_SIZE} bytes")
    return hashlib.sha384(register + digest).digest()


def _event_digest(kind: str, data: bytes) -> bytes:
    return hashlib.sha384(kind.encode() + b"\x00" + data).digest()


def launch_rtmr3(launch_measurement: bytes) -> bytes:
    """The RTMR3 of a TD whose runtime was launched with this manifest measurement."""
    return TdxEventLog.for_launch(launch_measurement).replay()


@dataclass(frozen=True, slots=True)
class TdxEvent:
    """One extend: ``digest`` (SHA-384 of ``type``, a zero byte and ``data``) into ``rtmr``."""

    rtmr: int
    type: str
    data: bytes

    @property
    def digest(self) -> bytes:
        return _event_digest(self.type, self.data)


@dataclass(frozen=True, slots=True)
class TdxEventLog:
    """The events a runtime extended into RTMR3, in order."""

    events: tuple[TdxEvent, ...]

    @classmethod
    def for_launch(cls, launch_measurement: bytes) -> TdxEventLog:
        """The log of a Confide launch: the one launch manifest event."""
        if len(launch_measurement) != 32:
            raise ValueError(f"a launch measurement is 32 bytes, got {len(launch_measurement)}")
        return cls((TdxEvent(3, LAUNCH_EVENT_TYPE, bytes(launch_measurement)),))

    def replay(self) -> bytes:
        """RTMR3 after these events, from 48 zero bytes."""
        register = bytes(RTMR_SIZE)
        for event in self.events:
            if event.rtmr == 3:
                register = extend_rtmr(register, event.digest)
        return register

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": 1,
                "events": [
                    {"rtmr": e.rtmr, "type": e.type, "data": e.data.hex(), "digest": e.digest.hex()}
                    for e in self.events
                ],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TdxEventLog:
        """Parse a log; digests are recomputed and must match. Raises :class:`FormatError`."""
        if len(raw) > MAX_EVENT_LOG_SIZE:
            raise FormatError(
                "event_log.size",
                "the TDX event log is too large",
                observed=f"{len(raw)} bytes",
                expected=f"at most {MAX_EVENT_LOG_SIZE}",
            )
        try:
            obj = strictjson.loads(raw, what="it", max_bytes=MAX_EVENT_LOG_SIZE)
            if obj.get("format") != _FORMAT or obj.get("version") != 1:
                raise ValueError("not a version 1 Confide TDX event log")
            items = obj["events"]
            if not isinstance(items, list) or len(items) > MAX_EVENTS:
                raise ValueError(f"events must be a list of at most {MAX_EVENTS}")
            events = []
            for item in items:
                if set(item) != {"rtmr", "type", "data", "digest"}:
                    raise ValueError("an event has other fields than rtmr, type, data, digest")
                rtmr, kind, data = item["rtmr"], item["type"], item["data"]
                if type(rtmr) is not int or not 0 <= rtmr <= 3 or not isinstance(kind, str):
                    raise ValueError("an event's rtmr or type is malformed")
                if not isinstance(data, str) or len(data) > 2 * _MAX_EVENT_DATA:
                    raise ValueError("an event's data is malformed")
                event = TdxEvent(rtmr, kind, bytes.fromhex(data))
                if item["digest"] != event.digest.hex():
                    raise ValueError(f"event {kind!r}: its digest is not SHA-384 of its data")
                events.append(event)
        except (JsonError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FormatError(
                "event_log.format", "the TDX event log is malformed", detail=str(exc)
            ) from None
        return cls(tuple(events))

    def check_launch(self, launch_measurement: bytes, rtmr3: bytes) -> None:
        """Raise :class:`PolicyError` unless this log is this launch and replays to ``rtmr3``.

        ``policy.event_log``: the log holds other events than this launch's
        manifest; ``policy.rtmr3``: the quote's RTMR3 is not the log's replay.
        """
        expected = TdxEventLog.for_launch(launch_measurement)
        if self != expected:
            raise PolicyError(
                "policy.event_log",
                "the TDX event log is not exactly this launch manifest",
                observed=[f"{e.rtmr}:{e.type}:{e.data.hex()}" for e in self.events],
                expected=[f"{e.rtmr}:{e.type}:{e.data.hex()}" for e in expected.events],
            )
        replayed = self.replay()
        if rtmr3 != replayed:
            raise PolicyError("policy.rtmr3", "RTMR3", observed=rtmr3, expected=replayed)


@dataclass(frozen=True, slots=True)
class TdReference:
    """Reference values of a guest image: MRTD and RTMR0-2 (48 bytes each)."""

    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes

    def __post_init__(self) -> None:
        for name in ("mr_td", "rtmr0", "rtmr1", "rtmr2"):
            if len(getattr(self, name)) != RTMR_SIZE:
                raise ValueError(f"{name} must be {RTMR_SIZE} bytes")

    def to_json(self) -> bytes:
        """The reference values file (format in the module's description)."""
        doc: dict[str, object] = {"format": _REFERENCE_FORMAT, "version": 1}
        doc.update({name: getattr(self, name).hex() for name in _REFERENCE_KEYS})
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> TdReference:
        """Parse a reference values file; raise :class:`FormatError` (``td_reference.format``)."""
        if len(raw) > MAX_TD_REFERENCE_SIZE:
            raise FormatError(
                "td_reference.size",
                "the TD reference values file is too large",
                observed=f"{len(raw)} bytes",
                expected=f"at most {MAX_TD_REFERENCE_SIZE}",
            )
        try:
            obj = strictjson.loads(raw, what="it", max_bytes=MAX_TD_REFERENCE_SIZE)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if obj.get("format") != _REFERENCE_FORMAT or obj.get("version") != 1:
                raise ValueError(f"not a version 1 {_REFERENCE_FORMAT} file")
            if set(obj) != {"format", "version", *_REFERENCE_KEYS}:
                raise ValueError(f"its keys must be format, version, {', '.join(_REFERENCE_KEYS)}")
            values = {}
            for name in _REFERENCE_KEYS:
                text = obj[name]
                if not isinstance(text, str) or len(text) != 2 * RTMR_SIZE or text != text.lower():
                    raise ValueError(f"{name} must be {2 * RTMR_SIZE} lower-case hex digits")
                values[name] = bytes.fromhex(text)
        except (JsonError, ValueError, TypeError) as exc:
            raise FormatError(
                "td_reference.format",
                "the TD reference values file is malformed",
                detail=str(exc),
                hint="it is the JSON an operator publishes with its guest image (MRTD, RTMR0-2)",
            ) from None
        return cls(**values)

    def policy(self, launch_measurement: bytes, **kwargs: object) -> Policy:
        """A :class:`Policy` expecting this image and RTMR3 of this launch (``kwargs`` added)."""
        rtmrs = (self.rtmr0, self.rtmr1, self.rtmr2, launch_rtmr3(launch_measurement))
        return Policy(mr_td=self.mr_td, rtmrs=rtmrs, **kwargs)  # type: ignore[arg-type]

    def expected(self, launch_measurement: bytes) -> dict[str, bytes]:
        """Every register a TD of this image launched with this manifest must report."""
        return {
            "mr_td": self.mr_td,
            "rtmr0": self.rtmr0,
            "rtmr1": self.rtmr1,
            "rtmr2": self.rtmr2,
            "rtmr3": launch_rtmr3(launch_measurement),
        }
