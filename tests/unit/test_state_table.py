"""The container-state table's write-back (logic only; the worker's own commits are exercised by
the stack tests): many changes between two commits, one write; nothing written for a partition
the worker no longer owns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from streams.rules.state import ContainerState
from streams.state_table import StateTable, WriteBackOnCommit


class _Table:
    """What StateTable uses of a faust Table (memory store): get, data, send_changelog."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[int, bytes, bytes]] = []

    def get(self, key: bytes) -> Any:
        return self.data.get(key)

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        self.changelog.append((partition, key, value))


def test_fifty_changes_between_two_commits_are_one_write() -> None:
    table = _Table()
    states = StateTable(table)
    for seq in range(50):
        state = states.get(b"CSQU3054383") or ContainerState()
        assert state.first_time("trk-1", f"{seq:016x}" * 2)  # ids are hashes
        states.put(b"CSQU3054383", state, 3)
    assert table.changelog == []
    assert states.write_back({3}) == 1
    [(partition, key, raw)] = table.changelog
    assert (partition, key) == (3, b"CSQU3054383")
    assert not ContainerState.model_validate_json(raw).first_time("trk-1", f"{49:016x}" * 2)
    assert table.data[key] is raw
    assert states.write_back({3}) == 0  # nothing changed since


def test_a_written_state_is_read_back_from_the_table_and_a_recovery_replaces_it() -> None:
    table = _Table()
    states = StateTable(table)
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
    table = _Table()
    states = StateTable(table)
    states.put(b"A", ContainerState(), 0)
    states.put(b"B", ContainerState(), 1)
    states.put(b"C", ContainerState(), 2)
    states.forget({1})
    assert states.get(b"B") is None  # its new owner replays it from the last commit
    assert states.write_back({0}) == 1  # partition 2 was lost meanwhile too
    assert [key for _, key, _ in table.changelog] == [b"A"]


class _FailingTable(_Table):
    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
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

    states = StateTable(_FailingTable())
    states.put(b"A", ContainerState(), 0)
    sensor = WriteBackOnCommit(states, "source")

    async def commit() -> None:
        with pytest.raises(RuntimeError, match="the producer is gone"):
            sensor.on_commit_initiated(Consumer())
        await asyncio.sleep(0)

    asyncio.run(commit())
    assert [str(exc) for exc in crashed] == ["the producer is gone"]
