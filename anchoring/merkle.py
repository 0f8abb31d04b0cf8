"""Merkle trees with the RFC 9162 §2.1 structure (the RFC 6962 / Certificate Transparency tree).

Leaf hash ``H(0x00 || d)``, interior ``H(0x01 || left || right)``, the split at the largest power
of two smaller than n, the empty tree ``H("")``. ``H`` is BLAKE3-256 by default; with
``hash="sha256"`` every function reproduces the public RFC 6962 test vectors.

Pure computation, no I/O. Building the tree level by level (an odd last node is carried up
unchanged) gives exactly the RFC's recursive tree, so a whole batch's root and every inclusion
proof come from one pass over the leaves. The ``verify_*`` functions never raise on malformed
proofs: they return False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import blake3

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32

Hasher = Callable[[bytes], bytes]


def _blake3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


HASHES: dict[str, Hasher] = {"blake3": _blake3, "sha256": _sha256}


def hasher(name: str) -> Hasher:
    try:
        return HASHES[name]
    except KeyError:
        raise ValueError(f"unknown hash {name!r}: use one of {', '.join(HASHES)}") from None


def leaf_hash(data: bytes, hash: str = "blake3") -> bytes:
    return hasher(hash)(LEAF_PREFIX + data)


def node_hash(left: bytes, right: bytes, hash: str = "blake3") -> bytes:
    return hasher(hash)(NODE_PREFIX + left + right)


def _parents(level: list[bytes], h: Hasher) -> list[bytes]:
    pairs = iter(level)
    parents = [h(NODE_PREFIX + left + right) for left, right in zip(pairs, pairs, strict=False)]
    if len(level) % 2:
        parents.append(level[-1])  # the odd node is carried up, not duplicated
    return parents


def _levels(leaves: Sequence[bytes], h: Hasher) -> list[list[bytes]]:
    """Every level of the tree, leaves' hashes first, the root's level last."""
    level = [h(LEAF_PREFIX + leaf) for leaf in leaves]
    levels = [level]
    while len(level) > 1:
        level = _parents(level, h)
        levels.append(level)
    return levels


def root(leaves: Sequence[bytes], hash: str = "blake3") -> bytes:
    h = hasher(hash)
    if not leaves:
        return h(b"")
    return _levels(leaves, h)[-1][0]


def _path(levels: list[list[bytes]], index: int) -> list[bytes]:
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int, hash: str = "blake3") -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 9162 §2.1.3.1), leaf-side first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path(_levels(leaves, hasher(hash)), index)


def tree(leaves: Sequence[bytes], hash: str = "blake3") -> tuple[bytes, list[tuple[bytes, ...]]]:
    """The root and every leaf's inclusion proof, from one pass over the leaves.

    Proofs are built top-down: a node's path is its sibling followed by its parent's path, so
    each level costs one tuple concatenation per node instead of one walk per leaf.
    """
    h = hasher(hash)
    if not leaves:
        return h(b""), []
    levels = _levels(leaves, h)
    paths: list[tuple[bytes, ...]] = [()]
    for level in reversed(levels[:-1]):
        size = len(level)
        paths = [
            (level[index ^ 1], *paths[index >> 1]) if index ^ 1 < size else paths[index >> 1]
            for index in range(size)
        ]
    return levels[-1][0], paths


def _subtree_root(hashes: Sequence[bytes], h: Hasher) -> bytes:
    """MTH over already-hashed leaves."""
    level = list(hashes)
    while len(level) > 1:
        level = _parents(level, h)
    return level[0]


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def consistency_proof(leaves: Sequence[bytes], old_size: int, hash: str = "blake3") -> list[bytes]:
    """Proof that the first ``old_size`` leaves are a prefix of ``leaves`` (RFC 9162 §2.1.4.1)."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise IndexError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    h = hasher(hash)
    hashes = [h(LEAF_PREFIX + leaf) for leaf in leaves]
    proof: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete), iteratively
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            proof.append(_subtree_root(hashes[lo + k:hi], h))
            hi = lo + k
        else:
            proof.append(_subtree_root(hashes[lo:lo + k], h))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(_subtree_root(hashes[lo:hi], h))
    proof.reverse()
    return proof


def _valid_hashes(values: Sequence[bytes]) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
                     hash: str = "blake3") -> bool:
    """True when ``leaf`` is at ``index`` of the tree of ``size`` leaves with ``root``."""
    if hash not in HASHES or not 0 <= index < size or not _valid_hashes([*proof, root]):
        return False
    h = HASHES[hash]
    fn, sn, r = index, size - 1, h(LEAF_PREFIX + leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = h(NODE_PREFIX + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = h(NODE_PREFIX + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes], hash: str = "blake3") -> bool:
    """True when the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    if hash not in HASHES or not _valid_hashes([*proof, old_root, new_root]):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    h = HASHES[hash]
    if old_size == 0:  # the empty tree is a prefix of every tree
        return not proof and old_root == h(b"")
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = h(NODE_PREFIX + c + fr)
            sr = h(NODE_PREFIX + c + sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = h(NODE_PREFIX + sr + c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
