"""DSSE envelopes (Dead Simple Signing Envelope v1, as used by in-toto and sigstore).

Format: a JSON object with exactly these members (unknown members are refused)::

    {"payload": BASE64(body), "payloadType": TYPE,
     "signatures": [{"keyid": KEYID, "sig": BASE64(signature)}, ...]}

Each signature is over the pre-authentication encoding, never the raw body::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``SP`` is one space (0x20), ``LEN`` the ASCII decimal byte length with
no leading zeros, ``type`` the UTF-8 payload type. Base64 is the standard
padded alphabet (RFC 4648 section 4). Confide signs with Ed25519
(:mod:`._keys`); the ``keyid`` is the signer's public key text
(``ed25519:BASE64``), so that a log monitor can check every entry's signature,
but it is only a hint: a user's check always uses the key the user was given.

Bounds: an envelope is at most :data:`MAX_ENVELOPE_SIZE` bytes with at most
:data:`MAX_SIGNATURES` signatures.

Example::

    >>> pae("application/example", b"hi")
    b'DSSEv1 19 application/example 2 hi'
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Final

from confide import strictjson
from confide.errors import JsonError, ReleaseError, UsageError

from ._keys import OwnerKey, OwnerPublicKey, b64decode_strict

#: The payload type of an in-toto Statement.
INTOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
#: Largest envelope read (its JSON bytes): a launch manifest is at most 32 KiB.
MAX_ENVELOPE_SIZE: Final = 96 * 1024
#: Most signatures read in one envelope.
MAX_SIGNATURES: Final = 8
#: Longest ``keyid`` read.
MAX_KEYID: Final = 128


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``body`` with ``payload_type``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


@dataclass(frozen=True, slots=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed DSSE envelope (not verified: see :meth:`verified_payload`)."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    @classmethod
    def sign(cls, payload_type: str, payload: bytes, key: OwnerKey) -> Envelope:
        signer = key.public_key.to_text()
        signature = EnvelopeSignature(signer, key.sign(pae(payload_type, payload)))
        return cls(payload_type, payload, (signature,))

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces (these are what the log's leaf hashes)."""
        value = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """Parse an envelope; :class:`ReleaseError` ``release.format`` if it is not one."""
        try:
            obj = strictjson.loads_object(
                data, what="the DSSE envelope", max_bytes=MAX_ENVELOPE_SIZE
            )
            return cls._from_object(obj)
        except (JsonError, UsageError) as exc:
            raise ReleaseError(
                "release.format", "the release statement's envelope is malformed", detail=str(exc)
            ) from None

    @classmethod
    def _from_object(cls, obj: dict[str, Any]) -> Envelope:
        if set(obj) != {"payload", "payloadType", "signatures"}:
            raise UsageError(f"members {sorted(obj)}, expected payload, payloadType, signatures")
        kind, payload, signatures = obj["payloadType"], obj["payload"], obj["signatures"]
        if not isinstance(kind, str) or not isinstance(payload, str):
            raise UsageError("payloadType and payload must be strings")
        if not isinstance(signatures, list) or not 0 < len(signatures) <= MAX_SIGNATURES:
            raise UsageError(f"signatures must be a list of 1 to {MAX_SIGNATURES}")
        parsed: list[EnvelopeSignature] = []
        for item in signatures:
            if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
                raise UsageError("a signature has exactly the members keyid and sig")
            keyid, sig = item["keyid"], item["sig"]
            if not isinstance(keyid, str) or len(keyid) > MAX_KEYID or not isinstance(sig, str):
                raise UsageError(f"a signature's keyid (at most {MAX_KEYID}) and sig are strings")
            parsed.append(EnvelopeSignature(keyid, b64decode_strict(sig, "a signature")))
        return cls(kind, b64decode_strict(payload, "the payload"), tuple(parsed))

    def signers(self) -> list[OwnerPublicKey]:
        """The keys the signatures name (hints, not checked: see :meth:`verified_payload`)."""
        found = []
        for signature in self.signatures:
            try:
                found.append(OwnerPublicKey.from_text(signature.keyid))
            except UsageError:
                continue
        return found

    def verified_payload(self, key: OwnerPublicKey, payload_type: str) -> bytes:
        """The payload, once one signature is ``key``'s over its PAE.

        Raises :class:`ReleaseError`: ``release.payload_type`` for another
        payload type, ``release.signature`` when a signature names ``key`` but
        does not verify (a tampered statement), ``release.owner`` when no
        signature is ``key``'s (another owner signed it).
        """
        if self.payload_type != payload_type:
            raise ReleaseError(
                "release.payload_type",
                "the release envelope's payload type",
                observed=self.payload_type,
                expected=payload_type,
            )
        message = pae(self.payload_type, self.payload)
        if any(key.verifies(s.sig, message) for s in self.signatures):
            return self.payload
        named = [s.keyid for s in self.signatures]
        if key.to_text() in named:
            raise ReleaseError(
                "release.signature",
                "the release statement's signature by the owner key does not verify",
                observed="an invalid signature",
                expected=f"a valid signature by {key.key_id}",
                hint="the statement was altered after it was signed",
            )
        raise ReleaseError(
            "release.owner",
            "the release statement is not signed by the owner key",
            observed=named,
            expected=key.to_text(),
            hint="another owner signed this release; check the key you were given",
        )
