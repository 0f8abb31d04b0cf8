"""The worker's Kafka clients: faust's driver makes the consumer hold each fetch up to 1,500 ms,
which delayed alerts by as much (one partition's records wait behind another's empty fetch);
faust's producer flush before a commit could leave messages queued."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from pydantic import ValidationError

from smartport.settings import Settings
from streams.app import faust_app
from streams.faust_kafka import FETCH_MAX_WAIT_MS, _Producer, drain


def _fetch_wait(app: faust.App) -> int:
    async def made() -> int:
        thread: Any = getattr(app.consumer, "_thread")  # noqa: B009 (faust types it not)
        consumer = thread._create_consumer(asyncio.get_running_loop())
        return int(consumer._fetch_max_wait_ms)  # not started: no connection is made

    return asyncio.run(made())


def test_the_workers_consumer_waits_at_most_100_ms_per_fetch(tmp_path: Path) -> None:
    assert _fetch_wait(faust.App("plain-faust", broker="kafka://127.0.0.1:1")) == 1500
    ours = faust_app(Settings(state_dir=tmp_path), "fetch-test")
    assert _fetch_wait(ours) == FETCH_MAX_WAIT_MS == 100


class _SlowBuffer:
    """faust's ProducerBuffer as Kafka is slow: each flush returns after sending one message
    (faust's gives up after 0.1 s without one), with messages still queued."""

    def __init__(self, queued: int) -> None:
        self.size = queued
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1
        self.size -= 1


def test_the_producer_buffer_is_drained_before_a_commit(tmp_path: Path) -> None:
    buffer = _SlowBuffer(queued=5)
    asyncio.run(drain(buffer))
    assert buffer.size == 0
    assert buffer.flushes == 5
    ours = faust_app(Settings(state_dir=tmp_path), "flush-test")
    assert isinstance(ours.producer, _Producer)


def test_the_after_flush_writers_run_after_faust_flushed_and_a_failure_crashes_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state table's changelog is delivered after the alerts queued in faust's buffer
    (a state never ahead of the alerts it raised) and before the commit; a writer that fails
    ends the worker rather than leave it alive and never committing."""
    ours = faust_app(Settings(state_dir=tmp_path), "after-flush-test")
    events: list[str] = []
    buffer = ours.producer.buffer
    monkeypatch.setattr(buffer, "flush", _recording(events, "faust's buffer flushed"))

    async def write() -> None:
        events.append("changelog written")

    ours.after_flush.append(write)
    asyncio.run(ours.producer.flush())
    assert events == ["faust's buffer flushed", "changelog written"]

    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    async def fail() -> None:
        raise RuntimeError("Kafka refused it")

    monkeypatch.setattr(ours, "crash", crash)
    ours.after_flush.append(fail)
    with pytest.raises(RuntimeError, match="Kafka refused it"):
        asyncio.run(ours.producer.flush())
    assert [str(exc) for exc in crashed] == ["Kafka refused it"]


def _recording(events: list[str], event: str) -> Any:
    async def record() -> None:
        events.append(event)

    return record


def test_the_worker_commits_every_streams_commit_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit writes back every changed state: the worker commits every 10 s by default
    (faust's own default is 2.8 s), and as often as the settings say."""
    assert faust.App("plain-faust").conf.broker_commit_interval == 2.8
    ours = faust_app(Settings(state_dir=tmp_path), "commit-test")
    assert ours.conf.broker_commit_interval == 10.0
    monkeypatch.setenv("SMARTPORT_BATCHES__STREAMS_COMMIT_SECONDS", "2")
    often = faust_app(Settings(state_dir=tmp_path), "commit-test-2")
    assert often.conf.broker_commit_interval == 2.0


@pytest.mark.parametrize("seconds", ["0", "1e-300", "-1", "301", "1e308", "nan", "inf", "ten"])
def test_a_commit_interval_out_of_bounds_is_named(
    monkeypatch: pytest.MonkeyPatch, seconds: str
) -> None:
    monkeypatch.setenv("SMARTPORT_BATCHES__STREAMS_COMMIT_SECONDS", seconds)
    with pytest.raises(ValidationError, match="streams_commit_seconds"):
        Settings()
