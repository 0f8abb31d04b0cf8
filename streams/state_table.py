"""The container-state table as the agents use it: written back once per commit, not per reading.

Each container's rule state is parsed from the changelog-backed table once, changed in place by
whichever agent handles the container's next event, and only marked dirty. When the worker
commits its offsets, faust first tells its sensors (``on_commit_initiated``), and this table's
sensor writes every dirty state back (the table and its changelog) before faust flushes its
producer and commits. A container that gets fifty readings between two commits costs one
serialisation and one changelog record instead of fifty. The offsets committed never run ahead
of the states written: after a crash the readings since the last commit are replayed from the
state as of that commit (their alerts come again with the same ids and versions).

A state whose partition was revoked before it was written is dropped: its new owner replays the
readings since the last commit from the state as of that commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import faust

from streams.rules.state import ContainerState

T = TypeVar("T")


class Parsed(Generic[T]):
    """A table's values parsed, each valid while the table still holds the very bytes it was
    parsed from: saves re-parsing on every reading (a rebalance or recovery replaces them)."""

    def __init__(self, table: Any, parse: Callable[[bytes], T]) -> None:
        self._table = table
        self._parse = parse
        self._cache: dict[bytes, tuple[bytes, T]] = {}

    def get(self, key: bytes) -> T | None:
        raw = self._table.get(key)
        if raw is None:
            return None
        cached = self._cache.get(key)
        if cached is None or cached[0] is not raw:
            cached = (raw, self._parse(raw))
            self._cache[key] = cached
        return cached[1]

    def put(self, key: bytes, value: T, raw: bytes) -> None:
        """Set ``key`` in the table (inside a stream: faust writes the changelog too)."""
        self._table[key] = raw
        self.remember(key, value, raw)

    def remember(self, key: bytes, value: T, raw: bytes) -> None:
        """``raw``, just stored for ``key``, parses to ``value``."""
        self._cache[key] = (raw, value)


class StateTable:
    """Rule states by container number (key), over a faust Table with the memory store."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._written = Parsed(table, ContainerState.model_validate_json)
        self._dirty: dict[bytes, tuple[int, ContainerState]] = {}  # key → partition, state

    def get(self, key: bytes) -> ContainerState | None:
        dirty = self._dirty.get(key)
        return dirty[1] if dirty is not None else self._written.get(key)

    def put(self, key: bytes, state: ContainerState, partition: int) -> None:
        """``state`` changed while handling an event of ``partition`` (co-partitioned with
        the table): written at the next commit."""
        self._dirty[key] = (partition, state)

    def write_back(self, owned: set[int]) -> int:
        """Write every dirty state of an ``owned`` partition to the table and its changelog;
        how many were written."""
        written = 0
        for key, (partition, state) in self._dirty.items():
            if partition not in owned:
                continue
            raw = state.model_dump_json().encode()
            self._table.data[key] = raw
            self._table.send_changelog(partition, key, raw)
            self._written.remember(key, state, raw)
            written += 1
        self._dirty.clear()
        return written

    def forget(self, partitions: set[int]) -> None:
        """``partitions`` were revoked: their unwritten states are the new owner's to redo."""
        self._dirty = {key: entry for key, entry in self._dirty.items()
                       if entry[0] not in partitions}


class WriteBackOnCommit(faust.Sensor):
    """Writes ``states`` back as the worker's consumer starts a commit (``source`` is one of the
    co-partitioned topics the table is keyed like: its assigned partitions are the owned
    ones)."""

    def __init__(self, states: StateTable, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._states = states
        self._source = source
        self.crashing: asyncio.Future[None] | None = None

    def on_commit_initiated(self, consumer: Any) -> None:
        owned = {tp.partition for tp in consumer.assignment() if tp.topic == self._source}
        try:
            self._states.write_back(owned)
        except Exception as exc:
            # Raising stops this commit (no offset passes an unwritten state), but faust would
            # go on without committing, alive and never committing again: crash the worker.
            self.crashing = asyncio.ensure_future(consumer.app.crash(exc))
            raise
