"""`smartport anchor`: a consumer group that batches records, anchors roots, commits after.

Per assigned (topic, partition) it resumes right after the last batch recorded in
anchors.heads.v1 (the latest anchors.v1 record of each partition),
collects record values in offset order, closes a batch at its fixed offset boundary (or after
``anchor_seconds``), and every ``anchor_seconds`` anchors all closed batches in one ledger entry
(their aggregate root); entries of ``MAX_BATCHES_PER_ENTRY`` batches go as soon as they are
full, and after one of those (a backlog being read) the backlog's end goes as soon as it has
been read. Only after the ledger confirmed and anchors.v1, then anchors.heads.v1,
took the records are the consumer offsets committed; a batch the ledger already holds (a crash
in between) is republished, never anchored twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from anchoring import batches
from anchoring.anchors import (
    TopicPartitionKey,
    anchor_records,
    head_key,
    heads,
    latest_manifests,
    latest_records,
)
from anchoring.errors import LedgerError
from anchoring.ledgers.base import Ledger
from anchoring.ledgers.file import FileLedger
from schemas import AnchorManifest, AnchorRecord, encode, topics
from smartport.group_consumer import GroupConsumer
from smartport.kafka import BULK_FETCH, discard_producer, produce, producer_config
from smartport.readiness import GROUP, STALL_S, Readiness
from smartport.settings import Settings
from smartport.signals import stop_on_signals

if TYPE_CHECKING:
    from anchoring.witness import PeriodicWitness

log = logging.getLogger(__name__)
MAX_BATCHES_PER_ENTRY = 256
READY_GAUGE = Gauge("smartport_anchorer_ready",
                    "1 while the anchorer holds its partitions and the ledger takes its roots")
WITNESS_FAILURES = Counter("smartport_anchorer_witness_failures",
                           "checkpoints the witness chain did not take (tried again later)")
_RETRY_S = 2.0

@dataclass(slots=True)
class _Partition:
    """Where one partition's batch collection stands: the leaves of the batch being collected
    (records are not kept: reading them is the anchorer's hot loop)."""

    last_offset: int  # the last offset batched or anchored
    prev_hash: str | None
    leaves: list[bytes] = field(default_factory=list)
    first_offset: int = 0  # of the batch being collected
    end: int = 0  # last offset of the fixed range that batch falls in
    last: Message | None = None  # its last record (for the batch's timestamp)
    opened_at: float = 0.0


@dataclass(frozen=True)
class _Closed:
    key: TopicPartitionKey
    manifest: AnchorManifest


class Anchorer:
    def __init__(self, settings: Settings, ledger: Ledger, group: str = "smartport-anchor",
                 source_topics: tuple[str, ...] | None = None,
                 witness: PeriodicWitness | None = None, *,
                 new_producer: Callable[[dict[str, Any]], Producer] = Producer) -> None:
        self._settings = settings
        self._make_producer = new_producer
        self._ledger = ledger
        self._witness = witness
        self._topics = source_topics or settings.anchor_topics
        self._batch_records = settings.batches.anchor_records
        self._interval = settings.batches.anchor_seconds
        self._hash = settings.anchor_hash
        self._consumer = GroupConsumer(
            settings.kafka, group, list(self._topics),
            on_assign=self._on_assign, on_revoke=self._on_revoke,
            # a ledger outage keeps the assignment
            options={**BULK_FETCH, "max.poll.interval.ms": 3_600_000})
        self._group = group
        self._producer = self._new_producer()
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        self._closed: list[_Closed] = []
        self._last_flush = time.monotonic()
        self._reading_backlog = False  # the last entry was full
        self.readiness = Readiness(READY_GAUGE, "anchorer", settings.kafka.join_timeout_s,
                                   conditions=("ledger",), stall_s=STALL_S)
        self.readiness.set("ledger", True)  # opened; a failed anchoring says otherwise
        self.anchored_batches = 0

    # -- assignment ----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        latest = self._resume_points()
        for tp in assigned:
            key = (tp.topic, tp.partition)
            manifest = latest[key].manifest if key in latest else None
            start = manifest.last_offset + 1 if manifest else 0
            self._partitions[key] = _Partition(
                start - 1, batches.manifest_hash(manifest) if manifest else None)
            tp.offset = start
        consumer.assign(assigned)
        self.readiness.set(GROUP, True)
        log.info("assigned", extra={"partitions": [f"{t.topic}/{t.partition}@{t.offset}"
                                                   for t in assigned]})

    def _resume_points(self) -> dict[TopicPartitionKey, AnchorRecord]:
        """The latest anchored batch per partition. Heads written by no one yet, with batches
        on anchors.v1 (an anchorer from before the heads topic), are found there once, in a
        read of the whole topic, and written as heads; if Kafka refuses them the anchorer
        stops (for its supervisor) rather than anchor on without them."""
        latest = heads(self._settings)
        if not latest:
            latest = latest_records(anchor_records(self._settings))
            if latest:
                log.warning("anchors.heads.v1 is empty: resuming from a read of the whole of "
                            "anchors.v1, once", extra={"partitions": len(latest)})
                self._produce_all(topics.ANCHOR_HEADS,
                                  [(head_key(key), r) for key, r in latest.items()])
        return latest

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self.readiness.set(GROUP, False)
        gone = {(tp.topic, tp.partition) for tp in revoked}
        for key in gone:
            self._partitions.pop(key, None)  # its unanchored records go to the next owner
        self._closed = [c for c in self._closed if c.key not in gone]

    # -- batching (pure bookkeeping) -------------------------------------------------------

    def _add(self, message: Message) -> None:
        # librdkafka's records always have both; a key of None is simply not assigned
        key: TopicPartitionKey = (message.topic(), message.partition())  # type: ignore[assignment]
        state = self._partitions.get(key)
        offset = message.offset()
        if state is None or offset is None:
            return
        if offset <= state.last_offset:
            return  # already batched or anchored (a redelivery after a seek)
        if state.leaves and offset > state.end:
            self._close(key, state)
        if not state.leaves:
            state.first_offset = offset
            state.end = batches.batch_end(offset, self._batch_records)
            state.opened_at = time.monotonic()
        state.leaves.append(batches.leaf(offset, message.value() or b""))
        state.last = message
        state.last_offset = offset
        if offset >= state.end:
            self._close(key, state)

    def _close(self, key: TopicPartitionKey, state: _Partition) -> None:
        assert state.last is not None  # a batch has records
        manifest = batches.manifest(
            key[0], key[1], state.leaves, first_offset=state.first_offset,
            last_offset=state.last_offset, timestamp_ms=state.last.timestamp()[1],
            hash_alg=self._hash, prev_manifest_hash=state.prev_hash)
        self._closed.append(_Closed(key, manifest))
        state.prev_hash = batches.manifest_hash(manifest)
        state.leaves = []
        state.last = None

    def _close_open(self, opened_by: float = math.inf) -> None:
        """Close every open batch opened at or before the monotonic time ``opened_by``."""
        for key, state in self._partitions.items():
            if state.leaves and state.opened_at <= opened_by:
                self._close(key, state)

    # -- anchoring (I/O) -------------------------------------------------------------------

    def _flush(self) -> None:
        """Anchor every closed batch in one ledger entry, publish, then commit offsets."""
        closed = self._closed[:MAX_BATCHES_PER_ENTRY]
        first = closed[0].manifest
        known = self._ledger.find(batches.batch_prefix(first.topic, first.partition,
                                                       first.first_offset))
        if known is not None:
            # The ledger took these before a crash: republish exactly what it holds.
            records = known
            log.warning("batches already on the ledger; republishing",
                        extra={"batches": [r.manifest.batch_id for r in known]})
        else:
            manifests = [c.manifest for c in closed]
            proofs = batches.aggregate(manifests, self._hash)
            ref = self._ledger.anchor(proofs[0].root, self._hash,
                                      list(zip(manifests, proofs, strict=True)))
            records = [AnchorRecord(manifest=m, aggregate=p, ledger=ref)
                       for m, p in zip(manifests, proofs, strict=True)]
        self._publish(records)
        if known is not None:  # only once anchors.v1 has them: until then they are to retry
            self._resync(known)
        offsets: dict[TopicPartitionKey, int] = {}
        for record in records:
            key = (record.manifest.topic, record.manifest.partition)
            offsets[key] = max(offsets.get(key, 0), record.manifest.last_offset + 1)
        self._consumer.commit(offsets)
        # Only now are the batches done; a failure above retries them (and finds them on the
        # ledger if it was Kafka that failed). A republish is done with the ledger's batches
        # only (``_resync`` dropped their partitions' closed ones, to be read again): batches
        # of other partitions that closed during the retries wait for the next entry.
        if known is None:
            self._closed = [c for c in self._closed if c not in closed]
        self._reading_backlog = len(records) == MAX_BATCHES_PER_ENTRY
        self.anchored_batches += len(records)
        log.info("anchored", extra={"batches": len(records), "ledger": records[0].ledger.entry,
                                    "root": records[0].aggregate.root})
        self._offer_witness()

    def _publish(self, records: list[AnchorRecord]) -> None:
        """Put ``records`` on anchors.v1, then the latest of each partition on
        anchors.heads.v1 (a head ahead of anchors.v1 would resume past batches no receipt
        could find), or raise."""
        self._produce_all(topics.ANCHORS, [(r.manifest.batch_id.encode(), r) for r in records])
        self._produce_all(topics.ANCHOR_HEADS, [
            (head_key(key), r) for key, r in latest_records(records).items()])

    def _produce_all(self, topic: str, keyed: list[tuple[bytes, AnchorRecord]]) -> None:
        """Produce ``keyed`` to ``topic`` and wait for every delivery report, or raise: an
        empty producer queue is not a write (a refused record would be committed past)."""
        refused: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                refused.append(error)

        for key, record in keyed:
            produce(self._producer, topic, key, encode(record), on_delivery=delivered)
        bound = self._settings.kafka.resolved_replace_after_s
        if self._producer.flush(bound) > 0:
            # Kafka away, or (seen after a Kafka restart) a producer left with no broker to
            # ask, for good: the retry finds the batches on the ledger and gives a new
            # producer the records this one held.
            discard_producer(self._producer, f"{self._group}-producer")
            self._producer = self._new_producer()
            raise LedgerError(f"Kafka did not take the {topic} records within {bound:g} s "
                              "(kafka.replace_after_s); its producer was replaced")
        if refused:
            if any(error.fatal() for error in refused):  # librdkafka: the producer is done for
                self._producer = self._new_producer()
            raise LedgerError(f"Kafka refused {len(refused)} of {len(keyed)} {topic} records: "
                              f"{refused[0].str()}")

    def _new_producer(self) -> Producer:
        return self._make_producer(producer_config(self._settings.kafka,
                                                   f"{self._group}-producer"))

    def _offer_witness(self) -> None:
        """Witness the file ledger's checkpoint when due. A chain that fails is tried again
        after the next anchoring: the witness is evidence on top, anchoring goes on."""
        if self._witness is None or not isinstance(self._ledger, FileLedger):
            return
        try:
            witnessed = self._witness.offer(self._ledger.checkpoint())
        except Exception as exc:  # any chain or node failure, see above
            WITNESS_FAILURES.inc()
            log.error("witnessing the ledger's checkpoint failed; trying again after the next "
                      "anchoring", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        if witnessed is not None:
            log.info("checkpoint witnessed", extra={"size": witnessed.checkpoint.size,
                                                    "witness": witnessed.witness.entry})

    def _resync(self, known: list[AnchorRecord]) -> None:
        """Adopt the ledger's batches after a crash: restart collection right after them."""
        latest = latest_manifests(known)
        for key, manifest in latest.items():
            state = self._partitions.get(key)
            if state is not None:
                state.last_offset = manifest.last_offset
                state.prev_hash = batches.manifest_hash(manifest)
                state.leaves = []
                state.last = None
                self._consumer.consumer.seek(TopicPartition(key[0], key[1], state.last_offset + 1))
        self._closed = [c for c in self._closed if c.key not in latest]

    # -- lifecycle -----------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume and anchor until ``stop`` (or SIGTERM/SIGINT), or ``idle_exit_s`` of quiet."""
        stop = stop or threading.Event()
        stop_on_signals(stop)
        last_message = time.monotonic()
        try:
            with self.readiness.watching():
                while not stop.is_set():
                    messages = self._consumer.consume(1000)
                    for message in messages:
                        last_message = time.monotonic()
                        self._add(message)
                    self._close_open(opened_by=time.monotonic() - self._interval)
                    self._maybe_flush(caught_up=not messages)
                    self.readiness.check()
                    if idle_exit_s is not None and not self._closed and not any(
                            s.leaves for s in self._partitions.values()) and (
                            time.monotonic() - last_message > idle_exit_s):
                        break
        finally:
            self._consumer.close()
            self._producer.flush(30)

    def _maybe_flush(self, caught_up: bool) -> None:
        """Anchor when the interval is up or an entry is full, and the end of a backlog as
        soon as it has been read: waiting longer then only delays it (by up to two
        intervals: its last batches close by time just after the next entry). A stream that
        is merely quiet (no full entry before) still waits for the interval, so that it does
        not make a ledger entry per record."""
        backlog_read = caught_up and self._reading_backlog
        if backlog_read:
            self._close_open()
        due = time.monotonic() - self._last_flush >= self._interval
        if not self._closed or not (
                due or backlog_read or len(self._closed) >= MAX_BATCHES_PER_ENTRY):
            return
        try:
            self._flush()
        except Exception as exc:  # the ledger or Kafka is unreachable: keep offsets, retry
            log.error("anchoring failed; retrying", extra={"error": str(exc)}, exc_info=True)
            self.readiness.set("ledger", False)
            time.sleep(_RETRY_S)
            return
        self.readiness.set("ledger", True)
        self._last_flush = time.monotonic()
