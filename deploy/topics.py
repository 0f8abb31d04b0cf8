"""The project's Kafka topics, created explicitly and idempotently."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from schemas import topics
from smartport import kafka as kafka_topics
from smartport.settings import KafkaSettings
from streams.relay import relay_group


def topic_configs(topic: str) -> dict[str, str]:
    if topic not in topics.COMPACTED_TOPICS:
        return {}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    if topic == topics.ANCHOR_HEADS:  # a record per partition per anchoring: the active
        # segment, never compacted, rolls every 10 minutes so that a reader of the heads
        # reads thousands of records, not a week of them
        return {**compacted, "segment.ms": "600000"}
    return compacted


def ensure_topics(kafka: KafkaSettings, timeout: float = 60.0) -> list[str]:
    """Create the missing project topics and wait until they have leaders; returns those
    created. An existing topic with another partition count is an error."""
    return kafka_topics.ensure_topics(
        kafka, {name: topic_configs(name) for name in topics.KAFKA_TOPICS}, timeout)


def delete_app_topics(kafka: KafkaSettings, app_id: str, timeout: float = 30.0) -> list[str]:
    """Delete the internal topics (changelogs, faust's assignor topic) and the consumer groups
    of a finished stream app; what is already gone is fine. Returns the topics deleted. A group
    that still has a member cannot be deleted: a worker with ``--instance-id`` (a static member)
    stays one for the session timeout after it stops; Kafka drops such a group's offsets after
    ``offsets.retention.minutes`` (7 days)."""
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    try:
        names = [name for name in admin.list_topics(timeout=timeout).topics
                 if name.startswith(f"{app_id}-")]
        futures = dict(admin.delete_topics(names, request_timeout=timeout)) if names else {}
        groups = [app_id, relay_group(app_id)]
        futures.update(admin.delete_consumer_groups(groups, request_timeout=timeout))
        for future in futures.values():
            future.exception()  # wait; a missing group or topic is not an error here
    except KafkaException:
        return []
    return names
