"""Verification of anchored records: the few functions a trade partner must trust.

Record → batch root (inclusion proof) → aggregate root (the batch's manifest in the ledger
entry's tree) → the ledger entry. Everything but the last step is offline and pure; the ledger
is asked once, through the ``Ledger`` interface. No Kafka here: the caller brings the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from anchoring import batches, merkle
from anchoring.errors import VerificationFailed
from anchoring.ledgers.base import Ledger
from schemas import AggregateProof, AnchorManifest, AnchorRecord, Receipt


def check_batch_root(manifest: AnchorManifest, leaves: Sequence[bytes]
                     ) -> list[tuple[bytes, ...]]:
    """The inclusion proof of every leaf; VerificationFailed unless ``leaves`` (the batch's
    record values in offset order) hash to the manifest's root."""
    root, proofs = merkle.tree(leaves, merkle.hasher_for(manifest.hash_alg))
    if root.hex() != manifest.root or len(leaves) != manifest.count:
        raise VerificationFailed("batch root", f"the {len(leaves)} records of "
                                 f"{manifest.batch_id} hash to {root.hex()}, the anchored root "
                                 f"is {manifest.root}")
    return proofs


def check_aggregate(manifest: AnchorManifest, aggregate: AggregateProof) -> None:
    """The manifest is a leaf of the aggregate tree whose root the ledger entry holds."""
    if not merkle.verify_inclusion(
            batches.manifest_bytes(manifest), aggregate.index, aggregate.size,
            [bytes.fromhex(node) for node in aggregate.proof], bytes.fromhex(aggregate.root),
            merkle.hasher_for(manifest.hash_alg)):
        raise VerificationFailed("aggregation", f"batch {manifest.batch_id} is not manifest "
                                 f"{aggregate.index} of {aggregate.size} under anchored root "
                                 f"{aggregate.root}")


def verify_batch(anchor: AnchorRecord, leaves: Sequence[bytes], ledger: Ledger) -> None:
    """A whole anchored batch: its records hash to its root, the root is in the anchored
    aggregate, and the ledger holds the aggregate. Raises VerificationFailed."""
    check_batch_root(anchor.manifest, leaves)
    check_aggregate(anchor.manifest, anchor.aggregate)
    ledger.check(anchor.ledger, anchor.aggregate.root, anchor.manifest.hash_alg)


def verify_offline(receipt: Receipt, record: bytes) -> None:
    """The checks that need nothing but the receipt and the record. Raises VerificationFailed."""
    manifest = receipt.manifest
    hasher = merkle.hasher_for(manifest.hash_alg)
    computed = hasher.hash_leaf(record).hex()
    if computed != receipt.record.leaf_hash:
        raise VerificationFailed("record hash", f"the record hashes to {computed}, the receipt "
                                 f"says {receipt.record.leaf_hash}")
    in_batch = manifest.first_offset <= receipt.record.offset <= manifest.last_offset and (
        (receipt.record.topic, receipt.record.partition) == (manifest.topic, manifest.partition))
    proof = [bytes.fromhex(node) for node in receipt.inclusion_proof]
    if not in_batch or not merkle.verify_inclusion(
            record, receipt.leaf_index, manifest.count, proof, bytes.fromhex(manifest.root),
            hasher):
        raise VerificationFailed("inclusion", f"the record is not leaf {receipt.leaf_index} of "
                                 f"{manifest.count} under batch root {manifest.root}")
    check_aggregate(manifest, receipt.aggregate)


def verify(receipt: Receipt, record: bytes, ledger: Ledger) -> None:
    """Offline proofs first, then the one ledger lookup. Raises VerificationFailed."""
    verify_offline(receipt, record)
    ledger.check(receipt.ledger, receipt.aggregate.root, receipt.manifest.hash_alg)
