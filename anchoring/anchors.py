"""Reading anchors.v1 back: which batches are anchored, up to where, per (topic, partition)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydantic import ValidationError

from schemas import AnchorManifest, AnchorRecord, topics
from smartport.kafka import read_range
from smartport.settings import Settings

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]


def anchor_records(settings: Settings) -> Iterator[AnchorRecord]:
    """Every record of anchors.v1; malformed ones are logged and skipped."""
    for message in read_range(settings.kafka, topics.ANCHORS, {}):
        try:
            yield AnchorRecord.model_validate_json(message.value() or b"")
        except ValidationError:
            log.warning("skipping a malformed anchors.v1 record",
                        extra={"partition": message.partition(), "offset": message.offset()})


def latest_manifests(records: Iterator[AnchorRecord] | list[AnchorRecord]
                     ) -> dict[TopicPartitionKey, AnchorManifest]:
    """The manifest reaching furthest per (topic, partition) among ``records``."""
    latest: dict[TopicPartitionKey, AnchorManifest] = {}
    for record in records:
        key = (record.manifest.topic, record.manifest.partition)
        if key not in latest or record.manifest.last_offset > latest[key].last_offset:
            latest[key] = record.manifest
    return latest


def last_anchored(settings: Settings) -> dict[TopicPartitionKey, AnchorManifest]:
    """The latest manifest per (topic, partition), read back from anchors.v1."""
    return latest_manifests(anchor_records(settings))


def anchored_through(settings: Settings, topic: str, ends: dict[int, int]) -> bool:
    """True once every partition of ``topic`` is anchored up to ``ends`` (exclusive)."""
    latest = last_anchored(settings)
    return all((topic, p) in latest and latest[topic, p].last_offset + 1 >= end
               for p, end in ends.items() if end > 0)
