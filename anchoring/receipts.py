"""Receipts for single records, and their verification (offline proofs, then the ledger)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from anchoring import batches, merkle
from anchoring.errors import VerificationFailed
from anchoring.ledger import Ledger
from anchoring.service import anchor_records
from schemas import AggregateProof, AnchorManifest, AnchorRecord, Receipt, RecordRef
from smartport.errors import InputRejected
from smartport.kafka import consumer_config
from smartport.settings import Settings

_READ_TIMEOUT_S = 60.0


def _anchor_record(settings: Settings, topic: str, partition: int, offset: int) -> AnchorRecord:
    latest = -1
    for record in anchor_records(settings):
        manifest = record.manifest
        if (manifest.topic, manifest.partition) != (topic, partition):
            continue
        if manifest.first_offset <= offset <= manifest.last_offset:
            return record
        latest = max(latest, manifest.last_offset)
    raise InputRejected(
        f"offset {offset} of {topic}/{partition} is not anchored yet (anchored up to offset "
        f"{latest}): run `smartport anchor` or wait for the next batch, then ask again")


def _batch_values(settings: Settings, record: AnchorRecord) -> list[tuple[int, bytes]]:
    manifest = record.manifest
    consumer = Consumer(consumer_config(settings.kafka, "smartport-receipts"))
    values: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(manifest.topic, manifest.partition,
                                        manifest.first_offset)])
        while not values or values[-1][0] < manifest.last_offset:
            message = consumer.poll(_READ_TIMEOUT_S)
            if message is None:
                raise InputRejected(f"Kafka no longer holds all records of batch "
                                    f"{manifest.batch_id} (retention?): no receipt possible")
            offset = message.offset()
            if message.error() or offset is None or offset > manifest.last_offset:
                continue
            values.append((offset, message.value() or b""))
    finally:
        consumer.close()
    return values


def _batch_tree(settings: Settings, anchor: AnchorRecord
                ) -> tuple[list[int], list[bytes], list[tuple[bytes, ...]]]:
    """Offsets, values and inclusion proofs of a batch's records as Kafka holds them now;
    VerificationFailed unless they hash to the anchored batch root."""
    manifest = anchor.manifest
    values = _batch_values(settings, anchor)
    leaves = [v for _, v in values]
    root, proofs = merkle.tree(leaves, hash=manifest.hash_alg)
    if root.hex() != manifest.root or len(leaves) != manifest.count:
        raise VerificationFailed("batch root", f"Kafka's records of {manifest.batch_id} hash to "
                                 f"{root.hex()}, the anchored root is {manifest.root}")
    return [o for o, _ in values], leaves, proofs


def _check_aggregate(manifest: AnchorManifest, aggregate: AggregateProof) -> None:
    if not merkle.verify_inclusion(
            batches.manifest_bytes(manifest), aggregate.index, aggregate.size,
            [bytes.fromhex(node) for node in aggregate.proof], bytes.fromhex(aggregate.root),
            hash=manifest.hash_alg):
        raise VerificationFailed("aggregation", f"batch {manifest.batch_id} is not manifest "
                                 f"{aggregate.index} of {aggregate.size} under anchored root "
                                 f"{aggregate.root}")


def verify_batch(settings: Settings, anchor: AnchorRecord, ledger: Ledger) -> None:
    """A whole anchored batch: Kafka's records hash to its root, the root is in the anchored
    aggregate, and the ledger holds the aggregate. Raises VerificationFailed."""
    _batch_tree(settings, anchor)
    _check_aggregate(anchor.manifest, anchor.aggregate)
    ledger.check(anchor.ledger, anchor.aggregate.root, anchor.manifest.hash_alg)


def build(settings: Settings, topic: str, partition: int, offset: int) -> tuple[Receipt, bytes]:
    """The receipt of one record, and the record's exact bytes."""
    anchor = _anchor_record(settings, topic, partition, offset)
    manifest = anchor.manifest
    offsets, leaves, proofs = _batch_tree(settings, anchor)
    if offset not in offsets:
        raise InputRejected(f"offset {offset} of {topic}/{partition} holds no record "
                            "(a transaction marker or a compacted record)")
    index = offsets.index(offset)
    value = leaves[index]
    receipt = Receipt(
        record=RecordRef(topic=topic, partition=partition, offset=offset,
                         leaf_hash=merkle.leaf_hash(value, hash=manifest.hash_alg).hex()),
        leaf_index=index,
        inclusion_proof=tuple(node.hex() for node in proofs[index]),
        manifest=manifest,
        aggregate=anchor.aggregate,
        ledger=anchor.ledger,
    )
    return receipt, value


def verify_offline(receipt: Receipt, record: bytes) -> None:
    """The checks that need nothing but the receipt and the record. Raises VerificationFailed."""
    manifest, alg = receipt.manifest, receipt.manifest.hash_alg
    computed = merkle.leaf_hash(record, hash=alg).hex()
    if computed != receipt.record.leaf_hash:
        raise VerificationFailed("record hash", f"the record hashes to {computed}, the receipt "
                                 f"says {receipt.record.leaf_hash}")
    in_batch = manifest.first_offset <= receipt.record.offset <= manifest.last_offset and (
        (receipt.record.topic, receipt.record.partition) == (manifest.topic, manifest.partition))
    proof = [bytes.fromhex(node) for node in receipt.inclusion_proof]
    if not in_batch or not merkle.verify_inclusion(
            record, receipt.leaf_index, manifest.count, proof, bytes.fromhex(manifest.root),
            hash=alg):
        raise VerificationFailed("inclusion", f"the record is not leaf {receipt.leaf_index} of "
                                 f"{manifest.count} under batch root {manifest.root}")
    _check_aggregate(manifest, receipt.aggregate)


def verify(receipt: Receipt, record: bytes, ledger: Ledger) -> None:
    """Offline proofs first, then the one ledger lookup. Raises VerificationFailed."""
    verify_offline(receipt, record)
    ledger.check(receipt.ledger, receipt.aggregate.root, receipt.manifest.hash_alg)
