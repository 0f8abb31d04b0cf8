"""Receipts for single records, and whole anchored batches checked against what Kafka holds.

The Kafka side: find a record's anchored batch in anchors.v1, read the batch's records back,
and hand them to ``anchoring.verify`` (which has no Kafka in it).
"""

from __future__ import annotations

from collections.abc import Collection

from confluent_kafka import Consumer, TopicPartition

from anchoring import batches, merkle, verify
from anchoring.anchors import anchor_records
from anchoring.ledgers.base import Ledger
from schemas import AnchorRecord, Receipt, RecordRef
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


def batch_values(settings: Settings, record: AnchorRecord) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of an anchored batch, as Kafka holds them now."""
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


def verify_batch(settings: Settings, anchor: AnchorRecord, ledger: Ledger,
                 trusted: Collection[str]) -> None:
    """Kafka's records of an anchored batch hash to its root, the root is in the anchored
    aggregate, and a trusted ledger holds the aggregate. Raises VerificationFailed."""
    verify.verify_batch(anchor, batch_values(settings, anchor), ledger, trusted)


def build(settings: Settings, topic: str, partition: int, offset: int) -> tuple[Receipt, bytes]:
    """The receipt of one record, and the record's exact bytes."""
    anchor = _anchor_record(settings, topic, partition, offset)
    manifest = anchor.manifest
    records = batch_values(settings, anchor)
    proofs = verify.check_batch_root(manifest, records)
    offsets = [o for o, _ in records]
    if offset not in offsets:
        raise InputRejected(f"offset {offset} of {topic}/{partition} holds no record "
                            "(a transaction marker or a compacted record)")
    index = offsets.index(offset)
    value = records[index][1]
    leaf = batches.leaf(offset, value, manifest.leaves)
    receipt = Receipt(
        record=RecordRef(topic=topic, partition=partition, offset=offset,
                         leaf_hash=merkle.hasher_for(manifest.hash_alg).hash_leaf(leaf).hex()),
        leaf_index=index,
        inclusion_proof=tuple(node.hex() for node in proofs[index]),
        manifest=manifest,
        aggregate=anchor.aggregate,
        ledger=anchor.ledger,
    )
    return receipt, value
