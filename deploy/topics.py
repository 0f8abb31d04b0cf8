"""The project's Kafka topics, created explicitly and idempotently."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import topics
from smartport.errors import StackError
from smartport.settings import KafkaSettings


def topic_configs(topic: str) -> dict[str, str]:
    if topic in topics.COMPACTED_TOPICS:
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    return {}


def ensure_topics(kafka: KafkaSettings, timeout: float = 30.0) -> list[str]:
    """Create the missing project topics; returns those created.

    An existing topic with another partition count is an error: telemetry and declarations
    must stay co-partitioned, and faust refuses mismatched tables.
    """
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    existing = admin.list_topics(timeout=timeout).topics
    for name in topics.KAFKA_TOPICS:
        if name in existing and len(existing[name].partitions) != kafka.partitions:
            have = len(existing[name].partitions)
            raise StackError(
                f"topic {name} has {have} partitions, settings want {kafka.partitions}: set "
                f"SMARTPORT_KAFKA__PARTITIONS={have}, or delete the topic and run again"
            )
    wanted = [
        NewTopic(
            name,
            num_partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
            config=topic_configs(name),
        )
        for name in topics.KAFKA_TOPICS
        if name not in existing
    ]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process won the race
                raise StackError(f"creating Kafka topic {name} failed: {exc}") from exc
    return [topic.topic for topic in wanted]


def delete_app_topics(kafka: KafkaSettings, app_id: str, timeout: float = 30.0) -> list[str]:
    """Delete the internal topics (changelogs, faust's assignor topic) and the consumer group of
    a finished stream app; what is already gone is fine. Returns the topics deleted."""
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    try:
        names = [name for name in admin.list_topics(timeout=timeout).topics
                 if name.startswith(f"{app_id}-")]
        futures = dict(admin.delete_topics(names, request_timeout=timeout)) if names else {}
        futures[app_id] = admin.delete_consumer_groups([app_id], request_timeout=timeout)[app_id]
        for future in futures.values():
            future.exception()  # wait; a missing group or topic is not an error here
    except KafkaException:
        return []
    return names
