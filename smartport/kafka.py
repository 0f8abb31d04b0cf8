"""Kafka clients as every smartport process configures them, and the helpers they share."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Counter

from smartport.errors import StackError
from smartport.settings import KafkaSettings

log = logging.getLogger(__name__)
COMMIT_FAILURES = Counter("smartport_kafka_commit_failures",
                          "offset commits that failed and were left to a later one", ["error"])
PRODUCERS_REPLACED = Counter(
    "smartport_kafka_producers_replaced",
    "producers replaced after delivering nothing for kafka.replace_after_s", ["client"])
# A broker restarting, or gone from the cluster (librdkafka then destroys its handle under the
# requests in flight to it): the same request succeeds a little later, elsewhere.
_BROKER_AWAY = frozenset({
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION, KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError._DESTROY_BROKER,
})
# ... or the group coordinator moving (offset commits) ...
_COMMIT_RETRIABLE = _BROKER_AWAY | {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._WAIT_COORD,
}
# ... or a partition leader being elected (metadata, watermarks); a new leader answers
# OFFSET_NOT_AVAILABLE until its high watermark has caught up with the old one's.
_LEADER_MOVING = _BROKER_AWAY | {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.OFFSET_NOT_AVAILABLE,
}
# ... or another process creating the same topic.
_CREATE_TRANSIENT = _BROKER_AWAY | {KafkaError.TOPIC_ALREADY_EXISTS}
# The group moved on: whoever owns the partitions now re-reads from the last commit.
_COMMIT_SUPERSEDED = frozenset({
    KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID,
})


def producer_config(kafka: KafkaSettings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """An idempotent, lz4, murmur2 producer that never gives up on a record by itself.

    ``message.timeout.ms=0`` keeps retrying while Kafka is down: the caller keeps its input
    unacknowledged meanwhile, so nothing is dropped and memory stays bounded by the caller.
    ``murmur2_random`` puts a key in the same partition as Java and faust (aiokafka) clients do.
    """
    return {
        **kafka.client_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        # Fewer, larger produce requests: the broker's cost is per request, not per record.
        "linger.ms": 25,
        "batch.num.messages": 10_000,
        "partitioner": "murmur2_random",
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": 200_000,
        **overrides,
    }


# For consumers that read in bulk (the sink, the anchorer): one fetch per 64 KB or 100 ms
# rather than one per record at low rates.
BULK_FETCH = {"fetch.min.bytes": 64 * 1024, "fetch.wait.max.ms": 100}


def consumer_config(kafka: KafkaSettings, group: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits only when told, starts at the beginning of a new partition and
    reads only committed records; end-of-partition events off. ``group`` is the consumer group
    (a plain reader by assignment still needs one).

    Long-running consumers pass ``max.poll.interval.ms``: an outage of what they write to must
    not cost them their assignment.
    """
    return {
        **kafka.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        # librdkafka stops fetching a partition while its local queue holds queued.min.messages
        # (100,000) and looks again only after this backoff (1 s by default): a reader of a
        # backlog faster than 100,000 records/s idled most of every second (bench/results).
        "fetch.queue.backoff.ms": 10,
        "on_commit": on_commit,
        **overrides,
    }


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes,
            **kwargs: Any) -> None:
    """Produce, waiting for room when the local queue is full instead of dropping the record."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
        except BufferError:
            producer.poll(0.05)
        else:
            producer.poll(0)
            return


def discard_producer(producer: Producer, client_id: str) -> None:
    """Drop what a producer being replaced holds, off the caller's thread (a stuck client's
    purge and destruction wait for its broker threads); its delivery reports are not served."""
    PRODUCERS_REPLACED.labels(client_id).inc()
    threading.Thread(target=producer.purge, name="discard-producer", daemon=True).start()


def flush_while_progressing(producer: Producer, stalled_after_s: float,
                            stop: threading.Event | None = None) -> int:
    """Flush ``producer`` until it holds nothing, however long Kafka is away, unless it
    delivers nothing for ``stalled_after_s`` (seen after a Kafka restart: a producer left with
    no broker to ask, for good) or ``stop`` is set; what it still holds then (0: all sent)."""
    left, progressed = len(producer), time.monotonic()
    while left and not (stop is not None and stop.is_set()):
        now_left = producer.flush(1.0)
        if now_left < left:
            progressed = time.monotonic()
        left = now_left
        if left and time.monotonic() - progressed > stalled_after_s:
            break
    return left


def high_watermarks(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The next offset of every partition of ``topic`` (where a reader starting now begins).

    Right after a broker restart partitions have no leader for a moment: retriable errors are
    retried for up to ``timeout`` seconds.
    """
    return {p: high for p, (_, high) in watermarks(kafka, topic, timeout).items()}


def watermarks(kafka: KafkaSettings, topic: str, timeout: float = 30.0
               ) -> dict[int, tuple[int, int]]:
    """The first offset still held (retention moves it on) and the next offset of every
    partition of ``topic``, riding out partitions without a leader as ``high_watermarks``."""
    consumer = Consumer(consumer_config(kafka, "smartport-watermarks"))
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                return {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                          timeout=10)
                        for p in partitions}
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                retriable = error.retriable() or error.code() in _LEADER_MOVING
                if not retriable or time.monotonic() > deadline:
                    raise
                log.warning("watermarks not available yet; retrying",
                            extra={"topic": topic, "error": error.str()})
                time.sleep(0.5)
    finally:
        consumer.close()


def committed_offsets(kafka: KafkaSettings, group: str, topic: str, partitions: int,
                      timeout: float = 60.0) -> dict[int, int]:
    """``group``'s committed offset of each of ``topic``'s first ``partitions`` partitions
    (0 where it committed none), riding out a coordinator that is moving or still loading."""
    consumer = Consumer(consumer_config(kafka, group))
    try:
        asked = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: max(tp.offset, 0) for tp in _committed(consumer, asked, timeout)}
    finally:
        consumer.close()


def start_at_end(kafka: KafkaSettings, group: str, topics: list[str]) -> int:
    """Commit the end of each partition of ``topics`` that ``group`` has no offset for, and
    return how many there were: where ``auto.offset.reset=latest`` starts a new group, made to
    last. Left to ``latest``, a consumer resolves the end when it first fetches and keeps it
    only in memory until its first commit; one that crashed before then began again at a later
    end and skipped what came between. A group with members has started already: they are
    left alone (Kafka refuses commits from outside an active group)."""
    ends = {(topic, p): end for topic in topics
            for p, end in high_watermarks(kafka, topic).items()}
    consumer = Consumer(consumer_config(kafka, group))
    try:
        asked = [TopicPartition(topic, p) for topic, p in ends]
        missing = [TopicPartition(tp.topic, tp.partition, ends[tp.topic, tp.partition])
                   for tp in _committed(consumer, asked) if tp.offset < 0]
        if missing:
            try:
                consumer.commit(offsets=missing, asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() not in _COMMIT_SUPERSEDED:
                    raise
                log.info("not setting where a running group starts", extra={"group": group})
                return 0
        return len(missing)
    finally:
        consumer.close()


def _committed(consumer: Consumer, asked: list[TopicPartition], timeout: float = 60.0
               ) -> list[TopicPartition]:
    """The committed offsets of ``asked`` (negative where none), riding out a coordinator
    that is moving or still loading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(consumer.committed(asked, timeout=10))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() not in _COMMIT_RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def read_range(
    kafka: KafkaSettings, topic: str, since: dict[int, int], timeout: float = 60.0
) -> Iterator[Message]:
    """Every record of ``topic`` from the ``since`` offsets up to the end as of the call.

    Reads by assignment, without a consumer group commit: for reports and verification.
    Raises TimeoutError after ``timeout`` seconds without a record: a long read that goes on
    (a week of anchors.v1, once) is not cut short.
    """
    held = watermarks(kafka, topic)
    # Where retention has passed ``since``, from the first record still held: a partition
    # whose records all expired has nothing to read (its reader would wait for none).
    start = {p: max(since.get(p, 0), low) for p, (low, _) in held.items()}
    end = {p: high for p, (_, high) in held.items()}
    todo = {p for p in end if end[p] > start[p]}
    if not todo:
        return
    consumer = Consumer(consumer_config(kafka, "smartport-reader"))
    try:
        consumer.assign([TopicPartition(topic, p, start[p]) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} from Kafka: no record for {timeout:.0f} s "
                                   f"with {len(todo)} partition(s) unfinished; is Kafka up?")
            # consume() waits out its whole timeout unless 1,000 records are there: short,
            # or every read of a few records costs the timeout (0.5 s was most of a read)
            for message in consumer.consume(1000, timeout=0.02):
                if message.error():
                    continue
                deadline = time.monotonic() + timeout
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None or offset >= end[partition]:
                    continue
                yield message
                if offset >= end[partition] - 1:
                    todo.discard(partition)
    finally:
        consumer.close()


def consume_records(consumer: Consumer, max_messages: int, timeout: float = 0.2) -> list[Message]:
    """The next records; end-of-partition events dropped, client errors logged and dropped."""
    records = []
    for message in consumer.consume(max_messages, timeout=timeout):
        error = message.error()
        if error is None:
            records.append(message)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("Kafka consumer error", extra={"error": str(error)})
    return records


def commit_offsets(consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` without waiting: the outcome reaches ``on_commit`` during a later poll.

    A consumer must keep polling: one held in a synchronous commit while its broker restarted
    was seen never to find its group coordinator again (it cannot serve the rebalance the
    coordinator's loss starts), while its readiness still said 1. An asynchronous commit that
    fails leaves the records uncommitted: the next commit covers them, or they are redelivered
    after a restart or a rebalance, which every consumer of ours tolerates. ``close()`` waits
    for the commits still in flight.
    """
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=True)


def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """How an asynchronous commit ended (every consumer's ``on_commit``): a coordinator moving
    or restarting, or a rebalance, is counted and logged, once per commit; any other failure (a
    refused ACL, say) raises out of the poll that delivered it."""
    failures = {tp.error.code(): tp.error for tp in partitions if tp.error is not None}
    if error is not None:
        failures[error.code()] = error
    for failure in failures.values():
        if failure.code() not in _COMMIT_RETRIABLE | _COMMIT_SUPERSEDED:
            raise KafkaException(failure)
    for failure in failures.values():
        COMMIT_FAILURES.labels(failure.name()).inc()
        log.warning("offset commit failed; the next commit or a redelivery covers it",
                    extra={"error": failure.str(), "partitions": len(partitions)})


def ensure_topics(kafka: KafkaSettings, configs: dict[str, dict[str, str]],
                  timeout: float = 60.0) -> list[str]:
    """Create the missing topics of ``configs`` (name → topic config) with the settings'
    partition count and replication, and return once the cluster's metadata shows every one
    of them with a leader for each partition. Returns the topics created.

    An existing topic with another partition count is an error: co-partitioned topics and
    faust's tables need the same count. A cluster still electing its controller, or another
    process creating the same topic, is waited out.
    """
    admin = AdminClient({**kafka.client_config(), "log_level": 0})
    deadline = time.monotonic() + timeout
    created: list[str] = []
    while True:
        existing = admin.list_topics(timeout=timeout).topics
        for name in configs:
            if name in existing and existing[name].error is None and (
                    len(existing[name].partitions) not in (0, kafka.partitions)):
                have = len(existing[name].partitions)
                raise StackError(
                    f"topic {name} has {have} partitions, settings want {kafka.partitions}: set "
                    f"SMARTPORT_KAFKA__PARTITIONS={have}, or delete the topic and run again")
        missing = [name for name in configs if name not in existing]
        ready = [name for name in configs if name in existing
                 and len(existing[name].partitions) == kafka.partitions
                 and all(p.leader >= 0 for p in existing[name].partitions.values())]
        if len(ready) == len(configs):
            return created
        if time.monotonic() > deadline:
            raise StackError(f"Kafka topics {sorted(set(configs) - set(ready))} are not ready "
                             f"after {timeout:.0f} s: is the cluster up? (`smartport stack "
                             "status`)")
        wanted = [NewTopic(name, num_partitions=kafka.partitions,
                           replication_factor=kafka.replication_factor, config=configs[name])
                  for name in missing]
        for name, future in (admin.create_topics(wanted, request_timeout=timeout).items()
                             if wanted else ()):
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                # Another process won the race, the controller is not elected yet, or the
                # client dropped a bootstrap connection for the broker it learned of.
                if error.code() not in _CREATE_TRANSIENT and not error.retriable():
                    raise StackError(f"creating Kafka topic {name} failed: {exc}") from exc
                log.info("topic not created yet; retrying", extra={"topic": name,
                                                                    "error": error.str()})
        time.sleep(0.5)
