"""The worker's Kafka consumer: faust's driver makes it hold each fetch up to 1,500 ms, which
delayed alerts by as much (one partition's records wait behind another's empty fetch)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust

from smartport.settings import Settings
from streams.app import faust_app
from streams.faust_kafka import FETCH_MAX_WAIT_MS


def _fetch_wait(app: faust.App) -> int:
    async def made() -> int:
        thread: Any = getattr(app.consumer, "_thread")  # noqa: B009 (faust types it not)
        consumer = thread._create_consumer(asyncio.get_running_loop())
        return int(consumer._fetch_max_wait_ms)  # not started: no connection is made

    return asyncio.run(made())


def test_the_workers_consumer_waits_at_most_100_ms_per_fetch(tmp_path: Path) -> None:
    assert _fetch_wait(faust.App("plain-faust", broker="kafka://127.0.0.1:1")) == 1500
    ours = faust_app(Settings(state_dir=tmp_path), "fetch-test", offset_reset="earliest")
    assert _fetch_wait(ours) == FETCH_MAX_WAIT_MS == 100
