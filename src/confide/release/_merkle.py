"""Merkle tree hashing and proofs of RFC 9162 (Certificate Transparency v2), section 2.1.

With ``H`` = SHA-256 and ``D[n]`` the list of ``n`` leaf inputs:

- leaf hash: ``H(0x00 || leaf)``; interior node: ``H(0x01 || left || right)``;
- ``MTH({}) = H("")``, ``MTH({d0}) = H(0x00 || d0)``, and for ``n > 1``, with
  ``k`` the largest power of two smaller than ``n``:
  ``MTH(D[n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))``;
- the inclusion proof of leaf ``m`` (section 2.1.3.1) and the consistency
  proof from size ``m`` to ``n`` (section 2.1.4.1) are lists of node hashes,
  verified by the algorithms of sections 2.1.3.2 and 2.1.4.2.

The functions here work on leaf *hashes* (the log stores them). Verification
raises :class:`~confide.errors.LogError` (``log.inclusion``,
``log.consistency``), never returns a bool. Proofs are at most
:data:`MAX_PROOF_LENGTH` hashes (a tree of up to 2**63 leaves).

Example::

    >>> leaves = [leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")]
    >>> verify_inclusion(leaves[1], 1, 3, inclusion_proof(leaves, 1), root(leaves))
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from confide.errors import LogError

#: Bytes of a node hash (SHA-256).
HASH_SIZE: Final = 32
#: Most hashes in a proof.
MAX_PROOF_LENGTH: Final = 64
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the tree whose leaf hashes are ``leaves``."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) over the leaf hashes ``leaves``."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root(leaves[:k])]


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], size: int) -> list[bytes]:
    """PROOF(size, D[n]): the tree of the first ``size`` leaves is a prefix of ``leaves``."""
    if not 0 <= size <= len(leaves):
        raise ValueError(f"size {size} is not within a tree of {len(leaves)}")
    if size in (0, len(leaves)):
        return []
    return _subproof(size, leaves, True)


def _check_proof(proof: Sequence[bytes], code: str) -> None:
    if len(proof) > MAX_PROOF_LENGTH or any(len(h) != HASH_SIZE for h in proof):
        raise LogError(
            code,
            "the log's proof is malformed",
            observed=f"{len(proof)} hashes of sizes {sorted({len(h) for h in proof})}",
            expected=f"at most {MAX_PROOF_LENGTH} hashes of {HASH_SIZE} bytes",
        )


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that the leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` with root
    ``expected_root`` (RFC 9162 2.1.3.2); :class:`LogError` ``log.inclusion`` if not."""
    _check_proof(proof, "log.inclusion")
    if not 0 <= index < size:
        raise LogError(
            "log.inclusion",
            "the logged entry's index is outside the checkpoint's tree",
            observed=index,
            expected=f"below {size}",
        )
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            break
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    else:
        if sn == 0 and r == expected_root:
            return
    raise LogError(
        "log.inclusion",
        "the log does not include the entry in the checkpoint's tree",
        observed=r,
        expected=expected_root,
        detail=f"leaf {index} of {size}",
        hint="the operator's log was altered, or the entry was never logged",
    )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of ``size2`` with
    ``root2`` (RFC 9162 2.1.4.2); :class:`LogError` ``log.consistency`` if not."""
    _check_proof(proof, "log.consistency")

    def fail(detail: str) -> LogError:
        return LogError(
            "log.consistency",
            "the log is not an extension of the one seen before",
            observed=f"size {size2}, root {root2.hex()}",
            expected=f"an extension of size {size1}, root {root1.hex()}",
            detail=detail,
            hint="the operator rewrote or forked its log: report it",
        )

    if not 0 <= size1 <= size2:
        raise fail("the log shrank")
    if size1 == size2:
        if proof or root1 != root2:
            raise fail("same size, different root")
        return
    if size1 == 0:
        if proof:
            raise fail("a proof from the empty tree must be empty")
        return
    if not proof:
        raise fail("empty proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # an exact power of two: its root is a node of the new tree
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise fail("the proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != root1 or sr != root2:
        raise fail("the proof does not lead to both roots")
