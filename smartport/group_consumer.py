"""A consumer-group member that gets back into its group by itself.

After a Kafka restart, librdkafka 2.16's consumer was seen, in 2 to 4 of 20 restarts of the
fault suite, to lose its group coordinator, let its session time out ("revoking assignment
and rejoining group") and never send another JoinGroup, while the process went on polling: a
streams worker's relay, or the sink, sat out of its group until the readiness bound ended the
process (``kafka.join_timeout_s``, 120 s), every record meanwhile waiting. The stuck client
made no attempt to reconnect once the broker went away (its siblings in the same process
logged dozens) and logged nothing after its session timed out; a new client is a member like
any other (in the fault suite, assigned 0.2 s after it replaced a stuck one).

So a member that has been out of its group (never joined, or revoked and not assigned again)
for ``kafka.replace_after_s`` is closed and replaced by a new consumer with the same
configuration and subscription. Nothing is lost: what the old member consumed but did not
commit is delivered again to whoever owns the partitions next, as after any rebalance. The
readiness bound still holds across replacements: a process whose new members do not get in
either still exits for its supervisor.

A member can also fail for good: a static member (``group.instance.id``) is fenced when another
process joins with the same instance id. librdkafka 2.16 neither raises that nor returns it from
``consume`` (nor calls ``error_cb``); it only logs it, then polls on, deaf. So each member's log
goes through ours (confluent-kafka's ``logger``), and a fatal error the current member logged
is raised from the next ``consume`` as ``ConsumerFailed`` (a replaced member whose close did not
finish is fenced by its own successor: that is the replacement working).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from prometheus_client import Counter

from smartport.errors import StackError
from smartport.kafka import commit_offsets, consume_records, consumer_config
from smartport.settings import KafkaSettings

log = logging.getLogger(__name__)
client_log = logging.getLogger("librdkafka")
REPLACED = Counter("smartport_kafka_consumers_replaced",
                   "consumers closed and replaced after too long out of their group", ["group"])
CLOSE_WAIT_S = 10.0  # a stuck client's close may not return: it is left to finish alone

Rebalanced = Callable[[Consumer, list[TopicPartition]], None]


class ConsumerFailed(StackError):
    """A consumer hit an error it cannot recover from (librdkafka's fatal errors)."""


class ClientLog:
    """librdkafka's log lines of one member of ``group``, into ours (confluent-kafka calls
    ``log`` as it would a logging.Logger's); the first fatal error is kept."""

    def __init__(self, group: str) -> None:
        self._group = group
        self.fatal: str | None = None

    def log(self, level: int, message: str, *args: Any) -> None:
        text = message % args if args else message
        if self.fatal is None and level >= logging.CRITICAL and "Fatal error" in text:
            self.fatal = text
        client_log.log(level, text, extra={"group": self._group})


class GroupConsumer:
    """A member of ``group`` subscribed to ``topics`` (``smartport.kafka.consumer_config`` and
    ``options``), replaced after ``kafka.replace_after_s`` out of its group. It joins on its
    first ``consume``. ``on_assign`` and ``on_revoke`` are called for the current member only,
    with that member as their first argument."""

    def __init__(self, kafka: KafkaSettings, group: str, topics: list[str], *,
                 on_assign: Rebalanced, on_revoke: Rebalanced,
                 options: dict[str, Any] | None = None,
                 new_consumer: Callable[[dict[str, Any]], Consumer] = Consumer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self._config = consumer_config(kafka, group, **(options or {}))
        self._log: ClientLog  # the current member's: each member gets its own, in _join
        self._topics = topics
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._replace_after_s = kafka.resolved_replace_after_s
        self._new_consumer = new_consumer
        self._clock = clock
        self._member = 0  # which member's rebalance callbacks count: the current one's only
        self._out_since: float | None = None
        self._consumer: Consumer | None = None

    def _join(self) -> Consumer:
        self._member += 1
        member = self._member
        self._log = ClientLog(self.group)
        consumer = self._new_consumer({**self._config, "logger": self._log})
        consumer.subscribe(
            self._topics,
            on_assign=lambda c, partitions: self._assigned(member, c, partitions),
            on_revoke=lambda c, partitions: self._revoked(member, c, partitions))
        self._out_since = self._clock()
        return consumer

    def _assigned(self, member: int, consumer: Consumer, partitions: list[TopicPartition]
                  ) -> None:
        if member == self._member:
            self._out_since = None
            self._on_assign(consumer, partitions)

    def _revoked(self, member: int, consumer: Consumer, partitions: list[TopicPartition]
                 ) -> None:
        if member == self._member:
            self._out_since = self._clock()
            self._on_revoke(consumer, partitions)

    @property
    def consumer(self) -> Consumer:
        """The current member (seek, position: what only it knows), joining if none has."""
        if self._consumer is None:
            self._consumer = self._join()
        return self._consumer

    def consume(self, max_messages: int, timeout: float = 0.2) -> list[Message]:
        """The next records (``smartport.kafka.consume_records``), after replacing a member
        that has been out of its group for too long."""
        since = self._out_since
        if since is not None and (out_s := self._clock() - since) > self._replace_after_s:
            self.replace(f"out of its group for {out_s:.1f} s (bound: kafka.replace_after_s)")
        records = consume_records(self.consumer, max_messages, timeout)
        if self._log.fatal is not None:
            fenced = "group.instance.id" in self._log.fatal  # the code is only _FATAL
            raise ConsumerFailed(
                f"the Kafka consumer of group {self.group} failed for good: {self._log.fatal}"
                + (" — another process runs with the same --instance-id; give each its own"
                   if fenced else ""))
        return records

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        commit_offsets(self.consumer, offsets)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def replace(self, why: str) -> None:
        """Close this member and join as a new one, which reads on from the group's commits
        (what this one consumed but did not commit is read again)."""
        old = self.consumer
        REPLACED.labels(self.group).inc()
        log.warning("consumer replaced by a new member", extra={"group": self.group,
                                                                "why": why})
        if self._out_since is None:  # its owner hears it leave its partitions, as in a rebalance
            self._revoked(self._member, old, old.assignment())
        self._member += 1  # whatever the old member says while it closes is not heard
        closing = threading.Thread(target=_close_quietly, args=(old, self.group),
                                   name=f"close-{self.group}", daemon=True)
        closing.start()
        closing.join(CLOSE_WAIT_S)  # gone from the group before its successor joins, mostly
        self._consumer = self._join()


def _close_quietly(consumer: Consumer, group: str) -> None:
    try:
        consumer.close()
    except Exception:
        log.warning("a replaced consumer did not close cleanly", extra={"group": group},
                    exc_info=True)
