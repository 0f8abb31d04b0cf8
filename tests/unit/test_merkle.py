"""Merkle trees: RFC 6962 known answers (SHA-256), corrupted proofs, BLAKE3 properties."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring import merkle
from tests.helpers import VECTORS, load_vectors

RFC = json.loads((VECTORS / "rfc6962.json").read_text())
LEAVES = [bytes.fromhex(leaf) for leaf in RFC["leaves"]]
ROOTS = [bytes.fromhex(r) for r in RFC["roots_by_size"]]


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_rfc6962_roots(size: int) -> None:
    assert merkle.root(LEAVES[:size], merkle.SHA256) == ROOTS[size]


@pytest.mark.parametrize(("name", "case"), load_vectors("rfc6962.json", "inclusion"))
def test_rfc6962_inclusion_proofs(name: str, case: dict[str, Any]) -> None:
    leaves, proof = LEAVES[:case["size"]], _hexes(case["proof"])
    assert merkle.inclusion_proof(leaves, case["index"], merkle.SHA256) == proof
    _, all_proofs = merkle.tree(leaves, merkle.SHA256)
    assert list(all_proofs[case["index"]]) == proof
    assert merkle.verify_inclusion(LEAVES[case["index"]], case["index"], case["size"], proof,
                                   ROOTS[case["size"]], merkle.SHA256)


@pytest.mark.parametrize(("name", "case"), load_vectors("rfc6962.json", "consistency"))
def test_rfc6962_consistency_proofs(name: str, case: dict[str, Any]) -> None:
    old, new, proof = case["old_size"], case["new_size"], _hexes(case["proof"])
    assert merkle.consistency_proof(LEAVES[:new], old, merkle.SHA256) == proof
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof, merkle.SHA256)


def _flip(value: bytes, bit: int = 3) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


Inclusion = tuple[bytes, int, int, list[bytes], bytes]
INCLUSION_CORRUPTIONS: dict[str, Callable[[Inclusion], Inclusion | None]] = {
    "wrong_leaf": lambda c: (c[0] + b"x", *c[1:]),
    "index_plus_1": lambda c: (c[0], c[1] + 1, *c[2:]),
    "index_minus_1": lambda c: (c[0], c[1] - 1, *c[2:]) if c[1] else None,
    "index_xor_2": lambda c: (c[0], c[1] ^ 2, *c[2:]),
    "size_times_2": lambda c: (c[0], c[1], c[2] * 2, *c[3:]),
    "size_div_2": lambda c: (c[0], c[1], c[2] // 2, *c[3:]),
    "size_zero": lambda c: (c[0], c[1], 0, *c[3:]),
    "modified_proof_node": lambda c: (*c[:3], [_flip(c[3][0]), *c[3][1:]], c[4]) if c[3] else None,
    "trailing_garbage": lambda c: (*c[:3], [*c[3], b"\x00" * 32], c[4]),
    "preceding_garbage": lambda c: (*c[:3], [b"\x00" * 32, *c[3]], c[4]),
    "truncated_proof": lambda c: (*c[:3], c[3][:-1], c[4]) if c[3] else None,
    "short_proof_node": lambda c: (*c[:3], [c[3][0][:31], *c[3][1:]], c[4]) if c[3] else None,
    "root_of_other_size": lambda c: (*c[:4], ROOTS[c[2] - 1]),
    "random_root": lambda c: (*c[:4], b"\x42" * 32),
    "short_root": lambda c: (*c[:4], c[4][:16]),
}


@pytest.mark.parametrize("corruption", sorted(INCLUSION_CORRUPTIONS))
@pytest.mark.parametrize(("name", "case"), load_vectors("rfc6962.json", "inclusion"))
def test_corrupted_inclusion_proofs_fail(name: str, case: dict[str, Any], corruption: str) -> None:
    good: Inclusion = (LEAVES[case["index"]], case["index"], case["size"],
                       _hexes(case["proof"]), ROOTS[case["size"]])
    bad = INCLUSION_CORRUPTIONS[corruption](good)
    if bad is None:
        return  # this corruption has nothing to act on in this case (an empty proof)
    assert merkle.verify_inclusion(*bad, merkle.SHA256) is False


Consistency = tuple[int, int, bytes, bytes, list[bytes]]
CONSISTENCY_CORRUPTIONS: dict[str, Callable[[Consistency], Consistency | None]] = {
    "old_size_plus_1": lambda c: (c[0] + 1, *c[1:]),
    "old_size_minus_1": lambda c: (c[0] - 1, *c[1:]),
    "new_size_div_2": lambda c: (c[0], c[1] // 2, *c[2:]),
    "new_size_times_2": lambda c: (c[0], c[1] * 2, *c[2:]),
    "swapped_roots": lambda c: (c[0], c[1], c[3], c[2], c[4]) if c[2] != c[3] else None,
    "wrong_old_root": lambda c: (c[0], c[1], _flip(c[2]), c[3], c[4]),
    "wrong_new_root": lambda c: (c[0], c[1], c[2], _flip(c[3]), c[4]),
    "modified_proof_node": lambda c: (*c[:4], [_flip(c[4][0]), *c[4][1:]]) if c[4] else None,
    "trailing_garbage": lambda c: (*c[:4], [*c[4], b"\x00" * 32]),
    "preceding_garbage": lambda c: (*c[:4], [b"\x00" * 32, *c[4]]),
    "truncated_proof": lambda c: (*c[:4], c[4][:-1]) if c[4] else None,
    "empty_proof": lambda c: (*c[:4], []) if c[4] else None,
    "old_size_above_new": lambda c: (c[1] + 1, c[1], *c[2:]),
}


@pytest.mark.parametrize("corruption", sorted(CONSISTENCY_CORRUPTIONS))
@pytest.mark.parametrize(("name", "case"), load_vectors("rfc6962.json", "consistency"))
def test_corrupted_consistency_proofs_fail(name: str, case: dict[str, Any],
                                           corruption: str) -> None:
    old, new = case["old_size"], case["new_size"]
    good: Consistency = (old, new, ROOTS[old], ROOTS[new], _hexes(case["proof"]))
    bad = CONSISTENCY_CORRUPTIONS[corruption](good)
    if bad is None:
        return
    assert merkle.verify_consistency(*bad, merkle.SHA256) is False


def test_empty_tree_and_bad_arguments() -> None:
    assert merkle.root([], merkle.SHA256) == ROOTS[0]
    assert merkle.verify_inclusion(b"", 0, 0, [], ROOTS[0], merkle.SHA256) is False
    assert merkle.verify_consistency(0, 5, ROOTS[0], ROOTS[5], [], merkle.SHA256) is True
    assert merkle.verify_consistency(0, 5, ROOTS[1], ROOTS[5], [], merkle.SHA256) is False
    with pytest.raises(IndexError, match="leaf index 3 is outside a tree of 3 leaves"):
        merkle.inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="unknown hash 'md5': use one of blake3, sha256"):
        merkle.hasher_for("md5")


def test_blake3_is_the_default() -> None:
    import blake3

    assert merkle.root([b"a"]) == blake3.blake3(b"\x00a").digest()
    assert merkle.root([b"a", b"b"]) == blake3.blake3(
        b"\x01" + blake3.blake3(b"\x00a").digest() + blake3.blake3(b"\x00b").digest()).digest()


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=3000), max_size=20))
def test_a_reused_hash_state_digests_every_input_as_a_fresh_one(inputs: list[bytes]) -> None:
    # Inputs across BLAKE3's 1,024-byte chunks and the empty input, one after another.
    for hasher in (merkle.BLAKE3, merkle.SHA256):
        reusing = hasher.digester()
        assert [reusing(data) for data in inputs] == [hasher.digest(data) for data in inputs]


leaves_strategy = st.lists(st.binary(max_size=40), min_size=1, max_size=70)


@settings(max_examples=150)
@given(leaves_strategy, st.data())
def test_every_proof_of_a_batch_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    tree_root, proofs = merkle.tree(leaves)
    assert tree_root == merkle.root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    assert list(proofs[index]) == merkle.inclusion_proof(leaves, index)
    for i, proof in enumerate(proofs):
        assert merkle.verify_inclusion(leaves[i], i, len(leaves), proof, tree_root)
    other = data.draw(st.integers(0, len(leaves) - 1))
    if leaves[other] != leaves[index]:
        assert not merkle.verify_inclusion(leaves[other], index, len(leaves), proofs[index],
                                           tree_root)


@settings(max_examples=150)
@given(leaves_strategy, st.data())
def test_consistency_between_any_two_sizes(leaves: list[bytes], data: st.DataObject) -> None:
    old = data.draw(st.integers(0, len(leaves)))
    proof = merkle.consistency_proof(leaves, old)
    assert merkle.verify_consistency(old, len(leaves), merkle.root(leaves[:old]),
                                     merkle.root(leaves), proof)


@pytest.mark.parametrize("hasher", [merkle.SHA256, merkle.BLAKE3], ids=["sha256", "blake3"])
def test_a_compact_range_has_the_root_of_every_prefix(hasher: merkle.Hasher) -> None:
    growing = merkle.CompactRange(hasher)
    assert growing.root() == merkle.root([], hasher)
    for size, leaf in enumerate(LEAVES * 5, start=1):
        growing.append(leaf)
        assert (growing.size, growing.root()) == (size, merkle.root((LEAVES * 5)[:size], hasher))
