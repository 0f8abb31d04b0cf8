"""Verification of anchored records: the few functions a trade partner must trust.

Record → batch root (inclusion proof) → aggregate root (the batch's manifest in the ledger
entry's tree) → the ledger entry. Everything but the last step is offline and pure; the ledger
is asked once, through the ``Ledger`` interface. No Kafka here: the caller brings the bytes.

A receipt names its ledger, and anyone can make a ledger: the verifier brings the ledger ids it
trusts (a file ledger's key fingerprint, an EVM anchoring account), learnt from the operator
through a channel it trusts, and a receipt naming any other ledger fails.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from anchoring import batches, merkle
from anchoring.errors import VerificationFailed
from anchoring.ledgers.base import Ledger
from schemas import AggregateProof, AnchorManifest, AnchorRecord, LedgerRef, Receipt
from schemas.transit import DischargeCertificate
from smartport.ed25519 import fingerprint, verify_signature


def check_batch_root(manifest: AnchorManifest, records: Sequence[tuple[int, bytes]]
                     ) -> list[tuple[bytes, ...]]:
    """The inclusion proof of every record; VerificationFailed unless ``records`` (the batch's
    (offset, value) pairs in offset order) hash to the manifest's root."""
    leaves = [batches.leaf(offset, value, manifest.leaves) for offset, value in records]
    root, proofs = merkle.tree(leaves, merkle.hasher_for(manifest.hash_alg))
    if root.hex() != manifest.root or len(leaves) != manifest.count:
        raise VerificationFailed("batch root", f"the {len(leaves)} records of "
                                 f"{manifest.batch_id} hash to {root.hex()}, the anchored root "
                                 f"is {manifest.root}")
    return proofs


def check_position(receipt: Receipt) -> None:
    """The record is at the receipt's topic/partition/offset. The manifest fixes the topic and
    partition; a leaf commits to its offset. A batch anchored before leaves carried offsets
    binds the offset only through its index, which needs offsets without gaps."""
    manifest, ref = receipt.manifest, receipt.record
    if (ref.topic, ref.partition) != (manifest.topic, manifest.partition) or not (
            manifest.first_offset <= ref.offset <= manifest.last_offset):
        raise VerificationFailed("position", f"{ref.topic}/{ref.partition}@{ref.offset} is "
                                 f"not in batch {manifest.batch_id}")
    if manifest.leaves is None and (
            manifest.count != manifest.last_offset - manifest.first_offset + 1
            or receipt.leaf_index != ref.offset - manifest.first_offset):
        raise VerificationFailed("position", f"batch {manifest.batch_id} predates leaves "
                                 f"bound to offsets, and leaf {receipt.leaf_index} is not "
                                 f"provably offset {ref.offset}")


def check_aggregate(manifest: AnchorManifest, aggregate: AggregateProof) -> None:
    """The manifest is a leaf of the aggregate tree whose root the ledger entry holds."""
    if not merkle.verify_inclusion(
            batches.manifest_bytes(manifest), aggregate.index, aggregate.size,
            [bytes.fromhex(node) for node in aggregate.proof], bytes.fromhex(aggregate.root),
            merkle.hasher_for(manifest.hash_alg)):
        raise VerificationFailed("aggregation", f"batch {manifest.batch_id} is not manifest "
                                 f"{aggregate.index} of {aggregate.size} under anchored root "
                                 f"{aggregate.root}")


def check_trusted(ref: LedgerRef, trusted: Collection[str]) -> None:
    """The entry is on a ledger the verifier trusts."""
    if ref.ledger_id not in trusted:
        raise VerificationFailed("ledger", f"the receipt names {ref.kind} ledger "
                                 f"{ref.ledger_id}, which is not one you trust "
                                 f"({', '.join(sorted(trusted)) or 'none named'})")


def verify_batch(anchor: AnchorRecord, records: Sequence[tuple[int, bytes]], ledger: Ledger,
                 trusted: Collection[str]) -> None:
    """A whole anchored batch: its (offset, value) records hash to its root, the root is in
    the anchored aggregate, and a trusted ledger holds the aggregate. Raises
    VerificationFailed."""
    check_batch_root(anchor.manifest, records)
    check_aggregate(anchor.manifest, anchor.aggregate)
    check_trusted(anchor.ledger, trusted)
    ledger.check(anchor.ledger, anchor.aggregate.root, anchor.manifest.hash_alg)


def verify_offline(receipt: Receipt, record: bytes) -> None:
    """The checks that need nothing but the receipt and the record. Raises VerificationFailed."""
    manifest, ref = receipt.manifest, receipt.record
    hasher = merkle.hasher_for(manifest.hash_alg)
    check_position(receipt)
    leaf = batches.leaf(ref.offset, record, manifest.leaves)
    computed = hasher.hash_leaf(leaf).hex()
    if computed != ref.leaf_hash:
        raise VerificationFailed("record hash", f"the record at offset {ref.offset} hashes to "
                                 f"{computed}, the receipt says {ref.leaf_hash}")
    proof = [bytes.fromhex(node) for node in receipt.inclusion_proof]
    if not merkle.verify_inclusion(leaf, receipt.leaf_index, manifest.count, proof,
                                   bytes.fromhex(manifest.root), hasher):
        raise VerificationFailed("inclusion", f"the record is not leaf {receipt.leaf_index} of "
                                 f"{manifest.count} under batch root {manifest.root}")
    check_aggregate(manifest, receipt.aggregate)


def verify(receipt: Receipt, record: bytes, ledger: Ledger, trusted: Collection[str]) -> None:
    """Offline proofs first, then the one ledger lookup. Raises VerificationFailed."""
    verify_offline(receipt, record)
    check_trusted(receipt.ledger, trusted)
    ledger.check(receipt.ledger, receipt.aggregate.root, receipt.manifest.hash_alg)


def verify_certificate(record: bytes, trusted_terminals: Collection[str]) -> str:
    """A discharge certificate's record is signed by a terminal the verifier trusts (its key
    id, learnt from the terminal through a channel the verifier trusts); the key id. Raises
    VerificationFailed."""
    try:
        certificate = DischargeCertificate.model_validate_json(record)
    except ValueError:
        raise VerificationFailed("certificate", "the record is not a discharge "
                                 "certificate") from None
    signature = certificate.signature
    if signature is None:
        raise VerificationFailed("terminal signature", "the certificate is not signed")
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signature.public_key))
    if fingerprint(public) != signature.key_id:
        raise VerificationFailed("terminal signature", f"key id {signature.key_id} is not "
                                 "the fingerprint of the public key it names")
    if signature.key_id not in trusted_terminals:
        raise VerificationFailed("terminal signature", f"signed by key {signature.key_id}, "
                                 "which is not a terminal you trust "
                                 f"({', '.join(sorted(trusted_terminals)) or 'none named'})")
    if not verify_signature(public, signature.value, certificate.signed_bytes()):
        raise VerificationFailed("terminal signature", "the signature does not match the "
                                 "certificate: it was changed after the terminal signed it")
    return signature.key_id
