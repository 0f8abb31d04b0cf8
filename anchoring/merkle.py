"""Merkle trees with the RFC 9162 §2.1 structure (the RFC 6962 / Certificate Transparency tree).

Leaf hash ``H(0x00 || d)``, interior ``H(0x01 || left || right)``, the split at the largest power
of two smaller than n, the empty tree ``H("")``. A ``Hasher`` value holds the three (as
transparency-dev/merkle's rfc6962 hasher does); ``BLAKE3`` is the default, and with ``SHA256``
every function reproduces the public RFC 6962 test vectors.

Pure computation, no I/O. Building the tree level by level (an odd last node is carried up
unchanged) gives exactly the RFC's recursive tree, so a whole batch's root and every inclusion
proof come from one pass over the leaves. The ``verify_*`` functions never raise on malformed
proofs: they return False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import blake3

from schemas.anchoring import HashAlgorithm

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32

Digest = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Hasher:
    """The leaf, children and empty-tree hashes of an RFC 9162 tree under one hash function.

    ``digester`` makes a digest function for one loop over many nodes (never shared between
    threads), cheaper per call than ``digest`` where the library lets a hash state be reused.
    """

    name: HashAlgorithm
    digest: Digest
    digester: Callable[[], Digest]

    def hash_leaf(self, data: bytes) -> bytes:
        return self.digest(LEAF_PREFIX + data)

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        return self.digest(NODE_PREFIX + left + right)

    def empty_root(self) -> bytes:
        return self.digest(b"")


def _blake3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def _blake3_digester() -> Digest:
    """BLAKE3 through one reused hash state: making a blake3 object is most of the cost of
    hashing a short input (about a third of a 200-byte leaf's, bench/merkle_bench.py)."""
    state = blake3.blake3()
    update, digest, reset = state.update, state.digest, state.reset

    def reusing(data: bytes) -> bytes:
        update(data)
        out = digest()
        reset()
        return out

    return reusing


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


BLAKE3 = Hasher("blake3", _blake3, _blake3_digester)
SHA256 = Hasher("sha256", _sha256, lambda: _sha256)
HASHERS: dict[str, Hasher] = {h.name: h for h in (BLAKE3, SHA256)}


def hasher_for(name: str) -> Hasher:
    """The hasher of an algorithm name (a manifest's ``hash_alg``, the ``anchor_hash`` setting)."""
    try:
        return HASHERS[name]
    except KeyError:
        raise ValueError(f"unknown hash {name!r}: use one of {', '.join(HASHERS)}") from None


def _parents(level: list[bytes], h: Digest) -> list[bytes]:
    pairs = iter(level)
    parents = [h(NODE_PREFIX + left + right) for left, right in zip(pairs, pairs, strict=False)]
    if len(level) % 2:
        parents.append(level[-1])  # the odd node is carried up, not duplicated
    return parents


def _levels(leaves: Sequence[bytes], h: Digest) -> list[list[bytes]]:
    """Every level of the tree, leaves' hashes first, the root's level last."""
    level = [h(LEAF_PREFIX + leaf) for leaf in leaves]
    levels = [level]
    while len(level) > 1:
        level = _parents(level, h)
        levels.append(level)
    return levels


def root(leaves: Sequence[bytes], hasher: Hasher = BLAKE3) -> bytes:
    if not leaves:
        return hasher.empty_root()
    return _levels(leaves, hasher.digester())[-1][0]


def _path(levels: list[list[bytes]], index: int) -> list[bytes]:
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index >>= 1
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int, hasher: Hasher = BLAKE3) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 9162 §2.1.3.1), leaf-side first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path(_levels(leaves, hasher.digester()), index)


def tree(leaves: Sequence[bytes], hasher: Hasher = BLAKE3
         ) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """The root and every leaf's inclusion proof, from one pass over the leaves.

    Proofs are built top-down: a node's path is its sibling followed by its parent's path, so
    each level costs one tuple concatenation per node instead of one walk per leaf.
    """
    if not leaves:
        return hasher.empty_root(), []
    levels = _levels(leaves, hasher.digester())
    paths: list[tuple[bytes, ...]] = [()]
    for level in reversed(levels[:-1]):
        size = len(level)
        paths = [
            (level[index ^ 1], *paths[index >> 1]) if index ^ 1 < size else paths[index >> 1]
            for index in range(size)
        ]
    return levels[-1][0], paths


def _subtree_root(hashes: Sequence[bytes], h: Digest) -> bytes:
    """MTH over already-hashed leaves."""
    level = list(hashes)
    while len(level) > 1:
        level = _parents(level, h)
    return level[0]


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def consistency_proof(leaves: Sequence[bytes], old_size: int, hasher: Hasher = BLAKE3
                      ) -> list[bytes]:
    """Proof that the first ``old_size`` leaves are a prefix of ``leaves`` (RFC 9162 §2.1.4.1)."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise IndexError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    h = hasher.digester()
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


class CompactRange:
    """The root of a growing tree in O(log n) memory and time per leaf: the perfect subtrees
    that the leaves so far fill, largest first (transparency-dev/merkle's compact range)."""

    def __init__(self, hasher: Hasher = BLAKE3) -> None:
        self._hasher = hasher
        self._subtrees: list[tuple[int, bytes]] = []  # (leaf count, hash)
        self.size = 0

    def append(self, leaf: bytes) -> None:
        node, count = self._hasher.hash_leaf(leaf), 1
        while self._subtrees and self._subtrees[-1][0] == count:
            left = self._subtrees.pop()[1]
            node, count = self._hasher.hash_children(left, node), count * 2
        self._subtrees.append((count, node))
        self.size += 1

    def root(self) -> bytes:
        """Equal to ``root`` of the same leaves: the RFC splits at the largest subtree."""
        if not self._subtrees:
            return self._hasher.empty_root()
        node = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            node = self._hasher.hash_children(left, node)
        return node


def _valid_hashes(values: Sequence[bytes]) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
                     hasher: Hasher = BLAKE3) -> bool:
    """True when ``leaf`` is at ``index`` of the tree of ``size`` leaves with ``root``."""
    if not 0 <= index < size or not _valid_hashes([*proof, root]):
        return False
    h = hasher.digest
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
                       proof: Sequence[bytes], hasher: Hasher = BLAKE3) -> bool:
    """True when the tree of ``old_size`` leaves is a prefix of the one of ``new_size``."""
    if not _valid_hashes([*proof, old_root, new_root]):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    h = hasher.digest
    if old_size == 0:  # the empty tree is a prefix of every tree
        return not proof and old_root == hasher.empty_root()
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
