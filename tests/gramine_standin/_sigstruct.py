"""SGX's SIGSTRUCT (Intel SDM vol. 3D, "Enclave Signature Structure"), 1808 bytes.

Layout (offset, size): HEADER (0, 12), VENDOR (12, 4), DATE (16, 4, BCD yyyymmdd),
HEADER2 (20, 16), SWDEFINED (36, 4), reserved (40, 84), MODULUS (128, 384,
little-endian), EXPONENT (512, 4), SIGNATURE (516, 384, little-endian), MISCSELECT
(900, 4), MISCMASK (904, 4), reserved (908, 20), ISVFAMILYID (928, 16), ATTRIBUTES
(944, 16: flags then XFRM), ATTRIBUTEMASK (960, 16), ENCLAVEHASH (976, 32),
reserved (1008, 16), ISVPRODID (1024, 2), ISVSVN (1026, 2), reserved (1028, 12),
Q1 (1040, 384), Q2 (1424, 384). The signed bytes are 0..127 and 900..1027;
the signature is RSA-3072 with exponent 3, EMSA-PKCS1-v1.5 over SHA-256, and
Q1 = floor(S² / M), Q2 = floor((S³ − Q1·S·M) / M) let the CPU check it cheaply.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIZE: Final = 1808
KEY_SIZE: Final = 3072
EXPONENT: Final = 3
_HEADER: Final = bytes.fromhex("06000000E100000000000100")
_HEADER2: Final = bytes.fromhex("01010000600000006000000001000000")
#: ATTRIBUTES.FLAGS: MODE64BIT, and DEBUG for a debug enclave (INIT is set by the CPU).
FLAG_MODE64BIT: Final = 0x4
FLAG_DEBUG: Final = 0x2
XFRM: Final = 0x3
FLAGS_MASK: Final = 0xFFFFFFFFFFFFFFFF
XFRM_MASK: Final = 0xFFFFFFFFFFF9FF1B
MISC_MASK: Final = 0xFFFFFFFF


class SigstructError(Exception):
    """Not a SIGSTRUCT, or one whose signature does not hold."""


def _bcd(value: int, digits: int) -> int:
    out = 0
    for shift, digit in enumerate(reversed(f"{value:0{digits}d}")):
        out |= int(digit) << (4 * shift)
    return out


def _from_bcd(value: int, digits: int) -> int:
    return int(f"{value:0{digits}x}")


@dataclass(frozen=True, slots=True)
class Sigstruct:
    enclave_hash: bytes
    modulus: int
    signature: int
    date: datetime.date
    attribute_flags: int
    attribute_xfrms: int
    isv_prod_id: int = 0
    isv_svn: int = 0
    misc_select: int = 0

    @property
    def mr_signer(self) -> bytes:
        """SHA-256 of the modulus as stored (little-endian), as the CPU computes MRSIGNER."""
        return hashlib.sha256(self.modulus.to_bytes(KEY_SIZE // 8, "little")).digest()

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & FLAG_DEBUG)

    def _signed(self) -> bytes:
        return self.to_bytes()[:128] + self.to_bytes()[900:1028]

    def to_bytes(self) -> bytes:
        out = bytearray(SIZE)
        out[0:12] = _HEADER
        date = (
            _bcd(self.date.year, 4) << 16 | _bcd(self.date.month, 2) << 8 | _bcd(self.date.day, 2)
        )
        struct.pack_into("<I", out, 16, date)
        out[20:36] = _HEADER2
        out[128:512] = self.modulus.to_bytes(384, "little")
        struct.pack_into("<I", out, 512, EXPONENT)
        out[516:900] = self.signature.to_bytes(384, "little")
        struct.pack_into("<II", out, 900, self.misc_select, MISC_MASK)
        struct.pack_into("<QQ", out, 944, self.attribute_flags, self.attribute_xfrms)
        struct.pack_into("<QQ", out, 960, FLAGS_MASK, XFRM_MASK)
        out[976:1008] = self.enclave_hash
        struct.pack_into("<HH", out, 1024, self.isv_prod_id, self.isv_svn)
        if self.signature:
            s, m = self.signature, self.modulus
            q1 = s * s // m
            q2 = (s * s * s - q1 * s * m) // m
            out[1040:1424] = q1.to_bytes(384, "little")
            out[1424:1808] = q2.to_bytes(384, "little")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sigstruct:
        if len(data) != SIZE or data[0:12] != _HEADER or data[20:36] != _HEADER2:
            raise SigstructError(f"not a SIGSTRUCT ({len(data)} bytes, expected {SIZE})")
        (raw_date,) = struct.unpack_from("<I", data, 16)
        (exponent,) = struct.unpack_from("<I", data, 512)
        if exponent != EXPONENT:
            raise SigstructError(f"SIGSTRUCT exponent is {exponent}, expected {EXPONENT}")
        misc_select, _ = struct.unpack_from("<II", data, 900)
        flags, xfrms = struct.unpack_from("<QQ", data, 944)
        prod, svn = struct.unpack_from("<HH", data, 1024)
        try:
            date = datetime.date(
                _from_bcd(raw_date >> 16, 4),
                _from_bcd((raw_date >> 8) & 0xFF, 2),
                _from_bcd(raw_date & 0xFF, 2),
            )
        except ValueError as exc:
            raise SigstructError(f"SIGSTRUCT date is not a date: {exc}") from None
        return cls(
            enclave_hash=bytes(data[976:1008]),
            modulus=int.from_bytes(data[128:512], "little"),
            signature=int.from_bytes(data[516:900], "little"),
            date=date,
            attribute_flags=flags,
            attribute_xfrms=xfrms,
            isv_prod_id=prod,
            isv_svn=svn,
            misc_select=misc_select,
        )

    def signed_with(self, key: rsa.RSAPrivateKey) -> Sigstruct:
        check_key(key)
        unsigned = Sigstruct(
            enclave_hash=self.enclave_hash,
            modulus=key.public_key().public_numbers().n,
            signature=0,
            date=self.date,
            attribute_flags=self.attribute_flags,
            attribute_xfrms=self.attribute_xfrms,
            isv_prod_id=self.isv_prod_id,
            isv_svn=self.isv_svn,
            misc_select=self.misc_select,
        )
        signature = key.sign(unsigned._signed(), padding.PKCS1v15(), hashes.SHA256())
        return _replace_signature(unsigned, int.from_bytes(signature, "big"))

    def check_signature(self) -> None:
        """What EINIT checks of the signer: the signature over the signed bytes, and Q1/Q2."""
        public = rsa.RSAPublicNumbers(EXPONENT, self.modulus).public_key()
        try:
            public.verify(
                self.signature.to_bytes(384, "big"),
                _replace_signature(self, 0)._signed(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise SigstructError("the SIGSTRUCT signature does not verify") from None


def _replace_signature(sig: Sigstruct, signature: int) -> Sigstruct:
    return Sigstruct(
        enclave_hash=sig.enclave_hash,
        modulus=sig.modulus,
        signature=signature,
        date=sig.date,
        attribute_flags=sig.attribute_flags,
        attribute_xfrms=sig.attribute_xfrms,
        isv_prod_id=sig.isv_prod_id,
        isv_svn=sig.isv_svn,
        misc_select=sig.misc_select,
    )


def check_key(key: object) -> rsa.RSAPrivateKey:
    """SGX signs with RSA-3072 and public exponent 3, nothing else."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigstructError(f"Invalid key: expected RSA private key, found {type(key).__name__}")
    if key.key_size != KEY_SIZE:
        raise SigstructError(f"Invalid RSA key: expected key size {KEY_SIZE}, got {key.key_size}")
    exponent = key.public_key().public_numbers().e
    if exponent != EXPONENT:
        raise SigstructError(f"Invalid RSA key: expected exponent {EXPONENT}, got {exponent}")
    return key
