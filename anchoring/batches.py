"""Batch boundaries, manifests and aggregation: pure functions over record values and offsets.

Batches cover fixed offset ranges ``[k*N, (k+1)*N - 1]`` of one (topic, partition). A batch
closed early by the time limit ends at its last record and the next one starts right after it,
up to the same aligned boundary, so ranges stay a function of offsets alone and a restarted
anchorer resumes exactly where the ledger says the last batch ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from anchoring import merkle
from schemas import AggregateProof, AnchorManifest, encode
from schemas.anchoring import HashAlgorithm, LeafFormat


def leaf(offset: int, value: bytes, leaves: LeafFormat | None = "offset+value") -> bytes:
    """The Merkle leaf of one record: its value, bound to its offset (``leaves`` is the
    manifest's format; None for batches anchored before offsets were bound)."""
    return value if leaves is None else offset.to_bytes(8, "big") + value


def batch_end(first_offset: int, batch_records: int) -> int:
    """Last offset of the fixed range that ``first_offset`` falls in."""
    return (first_offset // batch_records + 1) * batch_records - 1


def batch_prefix(topic: str, partition: int, first_offset: int) -> str:
    """What every batch starting at ``first_offset`` has its id start with."""
    return f"{topic}/{partition}/{first_offset}-"


def batch_id(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    return f"{batch_prefix(topic, partition, first_offset)}{last_offset}"


def manifest(
    topic: str,
    partition: int,
    leaves: Sequence[bytes],
    *,
    first_offset: int,
    last_offset: int,
    timestamp_ms: int,
    hash_alg: HashAlgorithm,
    prev_manifest_hash: str | None,
) -> AnchorManifest:
    """The manifest of one batch: ``leaves`` are its records' ``leaf``s in offset order,
    ``timestamp_ms`` the last record's Kafka timestamp. Equal inputs give byte-identical
    manifests."""
    if not leaves:
        raise ValueError("a batch needs at least one record")
    return AnchorManifest(
        batch_id=batch_id(topic, partition, first_offset, last_offset),
        topic=topic,
        partition=partition,
        first_offset=first_offset,
        last_offset=last_offset,
        count=len(leaves),
        root=merkle.root(leaves, merkle.hasher_for(hash_alg)).hex(),
        hash_alg=hash_alg,
        prev_manifest_hash=prev_manifest_hash,
        created_at=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
        leaves="offset+value",
    )


def manifest_bytes(value: AnchorManifest) -> bytes:
    """The leaf that stands for a manifest in the aggregate tree (its canonical bytes)."""
    return encode(value)


def manifest_hash(value: AnchorManifest) -> str:
    """What the next manifest of the same partition points back to."""
    return merkle.hasher_for(value.hash_alg).hash_leaf(manifest_bytes(value)).hex()


def aggregate(manifests: Sequence[AnchorManifest], hash_alg: HashAlgorithm
              ) -> list[AggregateProof]:
    """One Merkle tree over the manifests: its root goes into one ledger entry."""
    tree_root, proofs = merkle.tree([manifest_bytes(m) for m in manifests],
                                    merkle.hasher_for(hash_alg))
    return [
        AggregateProof(root=tree_root.hex(), index=i, size=len(manifests),
                       proof=tuple(node.hex() for node in proof))
        for i, proof in enumerate(proofs)
    ]
