"""RFC 9162 hashing and proofs: published vectors, every small tree, and a tamper table.

Vectors: the leaf inputs and tree roots of the Certificate Transparency
reference tests (RFC 6962 hashing, identical in RFC 9162), as published in
transparency-dev/merkle's ``testonly`` package; the proofs below are the
complete-subtree hashes of that tree, named by (level, index).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import LogError
from confide.release import (
    MAX_PROOF_LENGTH,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# Complete subtrees of the 8-leaf tree, (level, index) -> hash.
NODES = {
    (0, 1): "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    (0, 4): "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    (0, 5): "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    (1, 1): "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    (1, 2): "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 0): "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}
HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def nodes(*names: tuple[int, int]) -> list[bytes]:
    return [bytes.fromhex(NODES[name]) for name in names]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_roots_match_the_reference_vectors(size: int) -> None:
    assert root(HASHES[:size]) == ROOTS[size]


INCLUSION = {
    "leaf 0 of 8": (0, 8, nodes((0, 1), (1, 1), (2, 1))),
    "leaf 5 of 8": (5, 8, nodes((0, 4), (1, 3), (2, 0))),
    "leaf 2 of 3": (2, 3, [ROOTS[2]]),
    "leaf 0 of 1": (0, 1, []),
}


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION.values(), ids=INCLUSION.keys())
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(HASHES[:size], index) == proof
    verify_inclusion(HASHES[index], index, size, proof, ROOTS[size])


CONSISTENCY = {
    "1 to 8": (1, 8, nodes((0, 1), (1, 1), (2, 1))),
    "6 to 8": (6, 8, nodes((1, 2), (1, 3), (2, 0))),
    "2 to 5": (2, 5, nodes((1, 1), (0, 4))),
}


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY.values(), ids=CONSISTENCY.keys())
def test_consistency_vectors(size1: int, size2: int, proof: list[bytes]) -> None:
    assert consistency_proof(HASHES[:size2], size1) == proof
    verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2])


def test_every_proof_of_every_small_tree_verifies() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(33)]
    checked = 0
    for size in range(1, len(leaves) + 1):
        tree, head = leaves[:size], root(leaves[:size])
        for index in range(size):
            verify_inclusion(tree[index], index, size, inclusion_proof(tree, index), head)
            checked += 1
        for old in range(size + 1):
            proof = consistency_proof(tree, old)
            verify_consistency(old, size, proof, root(leaves[:old]), head)
            checked += 1
    assert checked > 1000


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# Each row changes one input of a valid inclusion check (leaf 5 of 8).
Inclusion = tuple[bytes, int, int, list[bytes], bytes]
GOOD_INCLUSION: Inclusion = (HASHES[5], 5, 8, nodes((0, 4), (1, 3), (2, 0)), ROOTS[8])
INCLUSION_TAMPER: dict[str, Callable[[Inclusion], Inclusion]] = {
    "another leaf": lambda a: (HASHES[4], *a[1:]),
    "another index": lambda a: (a[0], 4, *a[2:]),
    "index past the size": lambda a: (a[0], 8, *a[2:]),
    # A size and root are bound by the checkpoint: another size comes with its own root.
    "a smaller tree": lambda a: (a[0], a[1], 7, a[3], ROOTS[7]),
    "a larger tree": lambda a: (a[0], a[1], 9, *a[3:]),
    "first proof hash flipped": lambda a: (*a[:3], [flip(a[3][0]), *a[3][1:]], a[4]),
    "last proof hash flipped": lambda a: (*a[:3], [*a[3][:-1], flip(a[3][-1])], a[4]),
    "a hash missing": lambda a: (*a[:3], a[3][:-1], a[4]),
    "a hash too many": lambda a: (*a[:3], [*a[3], ROOTS[1]], a[4]),
    "a short hash": lambda a: (*a[:3], [a[3][0][:31], *a[3][1:]], a[4]),
    "another root": lambda a: (*a[:4], ROOTS[7]),
    "an overlong proof": lambda a: (*a[:3], [ROOTS[1]] * (MAX_PROOF_LENGTH + 1), a[4]),
}


@pytest.mark.parametrize("tamper", INCLUSION_TAMPER.values(), ids=INCLUSION_TAMPER.keys())
def test_inclusion_tamper(tamper: Callable[[Inclusion], Inclusion]) -> None:
    verify_inclusion(*GOOD_INCLUSION)  # the untampered row verifies
    changed = tamper(GOOD_INCLUSION)
    assert changed != GOOD_INCLUSION, "the tamper changed nothing"
    with pytest.raises(LogError) as caught:
        verify_inclusion(*changed)
    assert caught.value.code == "log.inclusion"


Consistency = tuple[int, int, list[bytes], bytes, bytes]
GOOD_CONSISTENCY: Consistency = (6, 8, nodes((1, 2), (1, 3), (2, 0)), ROOTS[6], ROOTS[8])
CONSISTENCY_TAMPER: dict[str, Callable[[Consistency], Consistency]] = {
    "old root rewritten": lambda a: (*a[:3], flip(a[3]), a[4]),
    "new root rewritten": lambda a: (*a[:4], flip(a[4])),
    "another old size": lambda a: (5, *a[1:]),
    "another new size": lambda a: (a[0], 7, a[2], a[3], ROOTS[7]),
    "the log shrank": lambda a: (8, 6, a[2], a[4], a[3]),
    "a proof hash flipped": lambda a: (a[0], a[1], [flip(a[2][0]), *a[2][1:]], *a[3:]),
    "a hash missing": lambda a: (a[0], a[1], a[2][:-1], *a[3:]),
    "a hash too many": lambda a: (a[0], a[1], [*a[2], ROOTS[1]], *a[3:]),
    "an empty proof": lambda a: (a[0], a[1], [], *a[3:]),
    "same size, another root": lambda a: (8, 8, [], ROOTS[7], ROOTS[8]),
    "same size, a proof": lambda a: (8, 8, [ROOTS[1]], ROOTS[8], ROOTS[8]),
    "from empty, a proof": lambda a: (0, 8, [ROOTS[1]], ROOTS[0], ROOTS[8]),
}


@pytest.mark.parametrize("tamper", CONSISTENCY_TAMPER.values(), ids=CONSISTENCY_TAMPER.keys())
def test_consistency_tamper(tamper: Callable[[Consistency], Consistency]) -> None:
    verify_consistency(*GOOD_CONSISTENCY)
    changed = tamper(GOOD_CONSISTENCY)
    assert changed != GOOD_CONSISTENCY, "the tamper changed nothing"
    with pytest.raises(LogError) as caught:
        verify_consistency(*changed)
    assert caught.value.code == "log.consistency"


@given(
    st.lists(st.binary(min_size=32, max_size=32), max_size=8),
    st.integers(0, 40),
    st.integers(0, 40),
)
def test_arbitrary_consistency_inputs_raise_only_our_error(
    proof: list[bytes], size1: int, size2: int
) -> None:
    try:
        verify_consistency(size1, size2, proof, ROOTS[1], ROOTS[2])
    except LogError as exc:
        assert exc.code == "log.consistency"
