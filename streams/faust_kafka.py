"""faust's Kafka transport with the consumer's fetch wait bounded and the producer's buffer
drained before every offset commit.

faust's aiokafka driver asks the broker to hold each fetch up to 1,500 ms (hard-coded). aiokafka
keeps one fetch in flight per broker, for the partitions that have nothing buffered at that
moment; records arriving meanwhile for the other partitions wait until that fetch returns.
Measured with the worker at 2,000 readings/s: one such wait every 20 s or so, and alerts
1.5 s late at p99 (batch in Kafka → alert); with a 100 ms bound, 0.23 to 0.47 s.

The agents queue their messages (alerts, changelog records) in faust's producer buffer, which
faust flushes before it commits offsets; but its flush gives up after 0.1 s without a message
sent (Kafka slow or away), and the offsets would be committed past messages still queued: a
crash then loses them. Ours waits until the buffer is empty, then awaits the app's
``after_flush`` writers (the state table's changelog, streams.state_table), still before the
commit; a writer that fails crashes the worker rather than let it go on without committing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:  # an AIOKafkaConsumer
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


async def drain(buffer: Any) -> None:
    """Flush faust's producer buffer until nothing is left in it."""
    while buffer.size:
        await buffer.flush()


class _Producer(driver.Producer):
    async def flush(self) -> None:
        await drain(self.buffer)
        await super().flush()
        app: App = self.app  # type: ignore[assignment]  # ours: _Transport is only App's
        for write in app.after_flush:
            try:
                await write()
            except Exception as exc:
                await app.crash(exc)
                raise


class _Transport(driver.Transport):
    Consumer = _Consumer
    Producer = _Producer


class App(faust.App):
    """A faust App whose Kafka consumer waits at most FETCH_MAX_WAIT_MS per fetch, and whose
    producer's flush (before each offset commit) leaves nothing queued, ``after_flush``'s
    writers included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_flush: list[Callable[[], Awaitable[None]]] = []

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
