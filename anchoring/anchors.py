"""Reading anchors.v1 back: which batches are anchored, up to where, per (topic, partition).

anchors.v1 holds every batch (receipts look theirs up there); anchors.heads.v1, compacted,
holds the latest of each (topic, partition), keyed ``topic/partition``: where the anchorer
resumes, read at every start in a time that does not grow with the history, and kept after
anchors.v1's records of a quiet partition expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from pydantic import ValidationError

from schemas import AnchorManifest, AnchorRecord, topics
from smartport.kafka import read_range
from smartport.settings import Settings

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]


def _read(settings: Settings, topic: str) -> Iterator[AnchorRecord]:
    for message in read_range(settings.kafka, topic, {}):
        try:
            yield AnchorRecord.model_validate_json(message.value() or b"")
        except ValidationError:
            log.warning("skipping a malformed anchor record", extra={
                "topic": topic, "partition": message.partition(), "offset": message.offset()})


def anchor_records(settings: Settings) -> Iterator[AnchorRecord]:
    """Every record of anchors.v1; malformed ones are logged and skipped."""
    return _read(settings, topics.ANCHORS)


def head_key(key: TopicPartitionKey) -> bytes:
    """A partition's key in anchors.heads.v1."""
    return f"{key[0]}/{key[1]}".encode()


def latest_records(records: Iterable[AnchorRecord]) -> dict[TopicPartitionKey, AnchorRecord]:
    """The record reaching furthest per (topic, partition) among ``records``."""
    latest: dict[TopicPartitionKey, AnchorRecord] = {}
    for record in records:
        key = (record.manifest.topic, record.manifest.partition)
        if key not in latest or record.manifest.last_offset > latest[key].manifest.last_offset:
            latest[key] = record
    return latest


def latest_manifests(records: Iterable[AnchorRecord]
                     ) -> dict[TopicPartitionKey, AnchorManifest]:
    """The manifest reaching furthest per (topic, partition) among ``records``."""
    return {key: record.manifest for key, record in latest_records(records).items()}


def heads(settings: Settings) -> dict[TopicPartitionKey, AnchorRecord]:
    """The latest anchor record per anchored (topic, partition), from anchors.heads.v1 (its
    superseded records not compacted yet are read too, and lose to the latest)."""
    return latest_records(_read(settings, topics.ANCHOR_HEADS))


def last_anchored(settings: Settings) -> dict[TopicPartitionKey, AnchorManifest]:
    """The latest manifest per (topic, partition), from anchors.heads.v1."""
    return latest_manifests(_read(settings, topics.ANCHOR_HEADS))


def anchored_through(settings: Settings, topic: str, ends: dict[int, int]) -> bool:
    """True once every partition of ``topic`` is anchored up to ``ends`` (exclusive)."""
    latest = last_anchored(settings)
    return all((topic, p) in latest and latest[topic, p].last_offset + 1 >= end
               for p, end in ends.items() if end > 0)
