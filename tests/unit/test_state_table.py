"""The container-state table's write-back (logic only; the worker's own commits are exercised by
the stack tests): many changes between two commits, one write; nothing written for a partition
the worker no longer owns; the changelog delivered by a producer of its own, which is replaced
when it delivers nothing, and whose refusal stops the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, Gauge

from smartport.readiness import GROUP, Readiness
from smartport.settings import KafkaSettings
from streams.rules.state import ContainerState
from streams.state_table import (
    CHANGELOG,
    ChangelogRefused,
    ChangelogWriter,
    StateTable,
    WriteBackOnCommit,
)

TOPIC = "app-states-changelog"


class _Table:
    """What StateTable uses of a faust Table (memory store): get and data."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> Any:
        return self.data.get(key)


class _Producer:
    """What ChangelogWriter uses of a confluent-kafka Producer; delivers on flush unless
    ``stuck`` (no broker to ask), refusing every record when ``refuse`` says why."""

    def __init__(self, stuck: bool = False, refuse: str | None = None) -> None:
        self.stuck, self.refuse = stuck, refuse
        self.queued: list[tuple[str, bytes, bytes, int, Any]] = []
        self.delivered: list[tuple[str, int, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, *, partition: int,
                on_delivery: Any) -> None:
        self.queued.append((topic, value, key, partition, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        if not self.stuck:
            for topic, value, key, partition, on_delivery in self.queued:
                error = _Refusal(self.refuse) if self.refuse else None
                on_delivery(error, None)
                if error is None:
                    self.delivered.append((topic, partition, key, value))
            self.queued.clear()
        return len(self.queued)

    def purge(self) -> None:
        self.queued.clear()

    def __len__(self) -> int:
        return len(self.queued)


class _Refusal:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def str(self) -> str:
        return self.reason


def _writer(*producers: _Producer, replace_after_s: float = 60.0,
            readiness: Readiness | None = None) -> ChangelogWriter:
    made = iter(producers)
    return ChangelogWriter(KafkaSettings(replace_after_s=replace_after_s), TOPIC, "test",
                           readiness or _readiness(),
                           new_producer=lambda config: next(made))  # type: ignore[arg-type,return-value]


def _readiness() -> Readiness:
    gauge = Gauge("smartport_test_ready", "test", registry=CollectorRegistry())
    readiness = Readiness(gauge, "streams", 60.0)
    readiness.set(GROUP, True)
    return readiness


def test_fifty_changes_between_two_commits_are_one_write() -> None:
    table, producer = _Table(), _Producer()
    changelog = _writer(producer)
    states = StateTable(table, changelog)
    for seq in range(50):
        state = states.get(b"CSQU3054383") or ContainerState()
        assert state.first_time("trk-1", f"{seq:016x}" * 2)  # ids are hashes
        states.put(b"CSQU3054383", state, 3)
    assert states.write_back({3}) == 1
    assert producer.delivered == []  # staged: delivered once faust's producer has flushed
    asyncio.run(changelog.write())
    [(topic, partition, key, raw)] = producer.delivered
    assert topic == TOPIC
    assert (partition, key) == (3, b"CSQU3054383")
    assert not ContainerState.model_validate_json(raw).first_time("trk-1", f"{49:016x}" * 2)
    assert table.data[key] is raw
    assert states.write_back({3}) == 0  # nothing changed since


def test_a_written_state_is_read_back_from_the_table_and_a_recovery_replaces_it() -> None:
    table = _Table()
    states = StateTable(table, _writer(_Producer()))
    state = ContainerState()
    state.first_time("trk-1", "a" * 32)
    states.put(b"K", state, 0)
    states.write_back({0})
    assert states.get(b"K") is state  # parsed once
    table.data[b"K"] = ContainerState().model_dump_json().encode()  # recovered from Kafka
    recovered = states.get(b"K")
    assert recovered is not None
    assert recovered.recent == {}


def test_states_of_revoked_partitions_are_not_written() -> None:
    producer = _Producer()
    changelog = _writer(producer)
    states = StateTable(_Table(), changelog)
    states.put(b"A", ContainerState(), 0)
    states.put(b"B", ContainerState(), 1)
    states.put(b"C", ContainerState(), 2)
    states.forget({1})
    assert states.get(b"B") is None  # its new owner replays it from the last commit
    assert states.write_back({0}) == 1  # partition 2 was lost meanwhile too
    asyncio.run(changelog.write())
    assert [key for _, _, key, _ in producer.delivered] == [b"A"]


def test_a_producer_that_delivers_nothing_is_replaced_and_the_records_sent_again() -> None:
    """Seen after a Kafka restart: a producer left with no broker to ask, for good. The commit
    waits for its changelog; without a replacement it would wait for ever."""
    stuck, fresh = _Producer(stuck=True), _Producer()
    changelog = _writer(stuck, fresh, replace_after_s=0.5)
    states = StateTable(_Table(), changelog)
    states.put(b"A", ContainerState(), 0)
    states.put(b"B", ContainerState(), 1)
    states.write_back({0, 1})
    asyncio.run(changelog.write())
    assert stuck.delivered == []
    assert [(partition, key) for _, partition, key, _ in fresh.delivered] == [(0, b"A"), (1, b"B")]


class _Watched(_Producer):
    """Records whether the worker said it was ready each time it was flushed."""

    def __init__(self, readiness: Readiness, stuck: bool) -> None:
        super().__init__(stuck=stuck)
        self.readiness = readiness
        self.ready_while_flushing: list[bool] = []

    def flush(self, timeout: float) -> int:
        self.ready_while_flushing.append(self.readiness.ready)
        return super().flush(timeout)


def test_a_commit_waiting_on_an_undelivered_changelog_makes_the_worker_not_ready() -> None:
    """Alive but not committing (Kafka away): the agents go on judging, but no offset passes
    an undelivered state, so once a producer has delivered nothing for kafka.replace_after_s
    the worker says so, until the changelog is delivered."""
    readiness = _readiness()
    stuck, fresh = _Watched(readiness, stuck=True), _Watched(readiness, stuck=False)
    changelog = _writer(stuck, fresh, replace_after_s=0.3, readiness=readiness)
    states = StateTable(_Table(), changelog)
    states.put(b"A", ContainerState(), 0)
    states.write_back({0})
    asyncio.run(changelog.write())
    assert set(stuck.ready_while_flushing) == {True}  # waiting less than the bound
    assert fresh.ready_while_flushing == [False]  # the bound passed: not ready ...
    assert fresh.delivered
    assert readiness.holds(CHANGELOG)  # ... until delivered
    assert readiness.ready


def test_a_changelog_record_kafka_refuses_fails_the_write() -> None:
    changelog = _writer(_Producer(refuse="Broker: Message size too large"))
    states = StateTable(_Table(), changelog)
    states.put(b"A", ContainerState(), 0)
    states.write_back({0})
    with pytest.raises(ChangelogRefused, match=f"for {TOPIC}: Broker: Message size too large"):
        asyncio.run(changelog.write())


class _FailingChangelog(ChangelogWriter):
    def stage(self, partition: int, key: bytes, value: bytes) -> None:
        raise RuntimeError("the producer is gone")


def test_a_write_back_that_fails_stops_the_commit_and_crashes_the_worker() -> None:
    """Raising inside faust's commit stops the commit but not faust: the worker would live on,
    never committing again. It must end instead (run_worker exits non-zero on a crash)."""
    crashed: list[BaseException] = []

    class App:
        async def crash(self, exc: BaseException) -> None:
            crashed.append(exc)

    class Consumer:
        app = App()

        def assignment(self) -> set[TP]:
            return {TP("source", 0)}

    states = StateTable(_Table(), _FailingChangelog(KafkaSettings(), TOPIC, "test", _readiness()))
    states.put(b"A", ContainerState(), 0)
    sensor = WriteBackOnCommit(states, "source")

    async def commit() -> None:
        with pytest.raises(RuntimeError, match="the producer is gone"):
            sensor.on_commit_initiated(Consumer())
        await asyncio.sleep(0)

    asyncio.run(commit())
    assert [str(exc) for exc in crashed] == ["the producer is gone"]
