"""The MQTT → Kafka gateway: at-least-once, validated, scaled out by splitting the topics.

By default a gateway holds a plain persistent subscription to its telemetry filters: Mosquitto
keeps those across its own restarts, so messages published while the broker comes back and the
gateway reconnects are queued, not discarded (Mosquitto 2.0 does not keep shared subscriptions).
Gateways scale out by subscribing to disjoint filters (by port or kind), or, trading that
guarantee for balancing, by sharing a group (``$share/<group>/...``).

An MQTT message is acknowledged (PUBACK) only after Kafka acknowledged its record, in
telemetry.v1 or, when rejected, in the DLQ. Messages not yet acknowledged stay in the broker's
persistent session and are redelivered if the gateway dies. The broker's in-flight window
(Receive Maximum) bounds what the gateway holds in memory while Kafka is slow or down.

One thread does everything: it waits on the MQTT socket, reads what arrived in one go, takes
each PUBLISH straight from what was read (``ingest.mqtt_socket``; paho's external-loop API
handles every other packet, the connection and its keepalive), hands it to Kafka, serves
Kafka's delivery reports, and writes the PUBACKs they release in one ``send`` per wake-up.
There is no lock and no thread hand-off per message.

No exception escapes the MQTT or Kafka callbacks: anything unexpected while handling a message
sends it to the DLQ with reason ``internal``. Should something escape paho's handling of the
connection anyway, ``run`` raises ``GatewayDeaf`` at once (the process exits non-zero for its
supervisor to restart it), and ``smartport_gateway_ready`` is 0 whenever the gateway cannot
receive. A Kafka producer that delivers nothing for ``kafka.replace_after_s`` while it holds
records (seen of librdkafka after a Kafka restart: no broker left to ask, for good) is replaced,
and what it held is produced again by its successor: the acknowledgements it withheld follow.
A message Kafka refuses for good stays unacknowledged and keeps its place in the broker's
in-flight window; once every place is so kept, ``run`` raises ``GatewayBlocked``.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message, Producer
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import metrics
from ingest.mqtt_socket import BufferedClient, BufferedSocket, Publish
from ingest.records import dlq_value, envelope_value
from ingest.validation import Accepted, Limits, Rejected, classify
from schemas import RejectReason, topics
from smartport.errors import StackError
from smartport.kafka import discard_producer, produce, producer_config
from smartport.mqtt import GATEWAY_USER, connect_properties, mqtt_as, new_client
from smartport.settings import Settings
from smartport.signals import stop_on_signals

log = logging.getLogger(__name__)
READY = "subscribed"  # logged once the subscriptions are in place: ready to receive

SHUTDOWN_FLUSH_SECONDS = 30.0
IDLE_WAIT_S = 0.1  # longest wait on the socket when Kafka owes no delivery report
DELIVERY_WAIT_S = 0.005  # ... when it does: each report releases a PUBACK
READ_BUDGET = 2000  # MQTT packets (or reads) per wake-up before delivery reports are served
# Wake-ups at most this often: what arrives meanwhile is read, produced and acknowledged
# together (Kafka waits 25 ms to batch anyway); at 2,000 msg/s that is 50 messages per wake-up.
# Each wake-up costs a select, a producer poll and a send, and runs on caches the other
# processes cooled: 2 ms cost the gateway 50 % more CPU per message than 10 ms at 2,000 msg/s,
# and 10 ms 16 % more than 25 ms at 1,500 msg/s (publish → Kafka p50 +5 ms, p99 +10 ms).
WAKE_INTERVAL_S = 0.025
RECONNECT_DELAYS_S = (1.0, 10.0)  # first and longest wait before connecting again


class GatewayDeaf(StackError):
    """Something escaped the MQTT network loop while the gateway was meant to be receiving."""


class GatewayBlocked(StackError):
    """Every place of the broker's in-flight window holds a message Kafka refused: the broker
    sends the gateway nothing more on this connection."""


@dataclass(frozen=True, slots=True)
class _Record:
    """What one MQTT message becomes in Kafka."""

    topic: str
    key: bytes
    value: bytes
    dlq_reason: str | None


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: a key of _pending
class _Pending:
    """An MQTT message whose Kafka write is under way."""

    mid: int  # 0 for a QoS 0 message, which is never acknowledged
    generation: int  # the MQTT connection that delivered it, the only one its ack is valid on
    producer: int  # the producer writing it, the only one whose report about it counts
    received: float
    record: _Record


class Gateway:
    def __init__(
        self,
        settings: Settings,
        gateway_id: str,
        share_group: str | None = None,
        receive_maximum: int | None = None,
        subscriptions: tuple[str, ...] | None = None,
        *,
        new_producer: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self.gateway_id = gateway_id
        self._settings = settings
        group = share_group or settings.mqtt.share_group
        self._subscriptions = [topics.shared_subscription(group, f) if group else f
                               for f in subscriptions or settings.mqtt.subscriptions]
        self._receive_maximum = receive_maximum or settings.mqtt.receive_maximum
        self._limits = Limits.from_settings(settings)
        self._new_producer = new_producer
        self._producers = 0
        self._producer = self._next_producer()
        self._replace_after_s = settings.kafka.resolved_replace_after_s
        self._client = new_client(mqtt_as(settings, GATEWAY_USER), gateway_id, manual_ack=True,
                                  client_class=BufferedClient)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        # Acks are only valid on the connection that delivered the message: after a reconnect
        # the broker redelivers unacknowledged messages, possibly reusing their packet ids.
        self._generation = 0
        self._withheld = 0  # messages of this connection left unacknowledged for good
        # In the order received (a dict as an ordered set): a replaced producer's records are
        # produced again in that order.
        self._pending: dict[_Pending, None] = {}
        self._progress_at = 0.0  # when the producer last delivered, or was last owed nothing
        self._produced = {topic: metrics.PRODUCED.labels(topic)
                          for topic in (topics.TELEMETRY, topics.TELEMETRY_DLQ)}
        self._reconnect_delay = RECONNECT_DELAYS_S[0]
        self._connect_at = 0.0  # monotonic time of the next connection attempt
        self._woke = 0.0
        self._stopping = False

    # -- MQTT side ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused", extra={"reason": str(reason)})
            return
        self._generation += 1
        self._withheld = 0  # the broker sends them again
        self._reconnect_delay = RECONNECT_DELAYS_S[0]
        metrics.MQTT_CONNECTED.set(1)
        log.info("MQTT connected", extra={"session_present": flags.session_present,
                                          "subscriptions": self._subscriptions})
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._subscriptions])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("MQTT subscription refused", extra={"reasons": [str(r) for r in reasons]})
        else:
            metrics.READY.set(1)
            log.info(READY, extra={"subscriptions": self._subscriptions})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        metrics.MQTT_CONNECTED.set(0)
        metrics.READY.set(0)
        if not self._stopping:
            self._connect_later()
            log.warning("MQTT disconnected; reconnecting",
                        extra={"reason": str(reason), "retry_in_s": self._reconnect_delay})

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """A PUBLISH the socket left to paho: only one at QoS 2, which a broker never sends
        to the gateway's QoS 1 subscriptions. Forwarded all the same, never acknowledged."""
        metrics.RECEIVED.inc()
        self._on_publish(Publish(message.topic, 0, bytes(message.payload)))

    def _on_publish(self, publish: Publish) -> None:
        received = time.monotonic()
        received_at = datetime.now(UTC)
        topic, payload = publish.topic, publish.payload
        try:
            record = self._record(topic, payload, received_at)
        except Exception as exc:  # a bug of ours must not cost the message or the thread
            record = self._internal(topic, payload, received_at, exc)
        # A device may publish at QoS 0: the broker then delivers without a packet id (mid 0),
        # and a PUBACK for it would be a protocol error that costs the gateway its connection.
        pending = _Pending(publish.mid, self._generation, self._producers, received, record)
        try:
            self._produce(pending)
        except Exception as exc:
            try:
                internal = self._internal(topic, payload, received_at, exc)
                self._produce(replace(pending, record=internal))
            except Exception:
                # Not even a bounded DLQ record went out: leave the message unacknowledged
                # (the broker redelivers it on the next session) and say so.
                log.critical("cannot write a message to Kafka; left unacknowledged",
                             extra={"mqtt_topic": topic}, exc_info=True)
                metrics.PRODUCE_ERRORS.labels(topics.TELEMETRY_DLQ, "produce_raised").inc()
                self._withhold(pending)

    def _record(self, mqtt_topic: str, payload: bytes, received_at: datetime) -> _Record:
        outcome = classify(mqtt_topic, payload, self._limits, received_at)
        if isinstance(outcome, Accepted):
            return _Record(topics.TELEMETRY, outcome.key,
                           envelope_value(outcome, mqtt_topic, self.gateway_id, received_at),
                           None)
        log.info("rejected to DLQ", extra={"mqtt_topic": mqtt_topic,
                                           "reason": outcome.reason.value,
                                           "detail": outcome.detail})
        return self._dlq(outcome, mqtt_topic, payload, received_at)

    def _dlq(self, rejected: Rejected, mqtt_topic: str, payload: bytes,
             received_at: datetime) -> _Record:
        value = dlq_value(rejected, payload, gateway_id=self.gateway_id,
                          received_at=received_at, mqtt_topic=mqtt_topic)
        return _Record(topics.TELEMETRY_DLQ, rejected.key, value, rejected.reason.value)

    def _internal(self, mqtt_topic: str, payload: bytes, received_at: datetime,
                  exc: Exception) -> _Record:
        log.error("failed to handle a message; it goes to the DLQ as internal",
                  extra={"mqtt_topic": mqtt_topic}, exc_info=True)
        detail = f"{type(exc).__name__}: {exc}"[:1000]
        return self._dlq(Rejected(RejectReason.INTERNAL, detail), mqtt_topic, payload,
                         received_at)

    def _produce(self, pending: _Pending) -> None:
        record = pending.record

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            self._on_delivery(pending, error, message)

        try:  # delivery reports are served once per wake-up, not after each record
            self._producer.produce(record.topic, record.value, record.key,
                                   on_delivery=on_delivery)
        except BufferError:  # Kafka's local queue is full: wait for room, serving reports
            produce(self._producer, record.topic, record.key, record.value,
                    on_delivery=on_delivery)
        if not self._pending:
            self._progress_at = time.monotonic()  # owed nothing until now
        self._pending[pending] = None

    # -- Kafka side (delivery reports, served by the same thread) ----------------------------

    def _on_delivery(self, pending: _Pending, error: KafkaError | None, message: Message) -> None:
        try:
            self._delivered(pending, error, message)
        except Exception:  # an exception here would surface in whoever polls the producer
            log.exception("failed to handle a Kafka delivery report")

    def _delivered(self, pending: _Pending, error: KafkaError | None, message: Message) -> None:
        if pending.producer != self._producers:
            return  # from a replaced producer: its successor was given the record again
        del self._pending[pending]
        now = self._progress_at = time.monotonic()
        if error is not None:
            # Only permanent errors reach here (message.timeout.ms=0 retries the rest).
            metrics.PRODUCE_ERRORS.labels(message.topic(), error.name()).inc()
            log.error("Kafka refused a record; the MQTT message stays unacknowledged",
                      extra={"topic": message.topic(), "error": str(error)})
            self._withhold(pending)
            return
        metrics.KAFKA_UP.set(1)
        self._produced[pending.record.topic].inc()
        metrics.PRODUCE_LATENCY.observe(now - pending.received)
        if pending.record.dlq_reason is not None:
            metrics.DLQ.labels(pending.record.dlq_reason).inc()
        if pending.mid and pending.generation == self._generation:
            sock = self._client.buffered_socket()
            if sock is not None:
                sock.acknowledge(pending.mid)  # written once per wake-up
                metrics.ACKNOWLEDGED.inc()

    def _withhold(self, pending: _Pending) -> None:
        """``pending`` stays unacknowledged: it keeps its place in the broker's in-flight
        window until the next connection, and once every place is so kept the broker sends
        nothing more."""
        if pending.mid and pending.generation == self._generation:
            self._withheld += 1

    def _check_receiving(self) -> None:
        if self._withheld >= self._receive_maximum:
            metrics.READY.set(0)
            raise GatewayBlocked(
                f"Kafka refused all {self._withheld} messages the MQTT broker may have in "
                f"flight to this gateway (receive maximum {self._receive_maximum}); the broker "
                "sends it nothing more on this connection. Exiting so that a restarted gateway "
                "is given them again: see the errors above (e.g. a topic's max.message.bytes) "
                "and smartport_gateway_produce_errors_total")

    def _next_producer(self) -> Producer:
        self._producers += 1
        return self._new_producer(producer_config(
            self._settings.kafka, self.gateway_id, error_cb=self._on_kafka_error))

    def _check_delivering(self) -> None:
        """Replace a producer that delivered nothing for too long while it held records, and
        give its successor what it held (its late reports, if any, are not heard)."""
        stuck_s = time.monotonic() - self._progress_at
        if not self._pending or stuck_s <= self._replace_after_s:
            return
        held = list(self._pending)
        log.warning("the Kafka producer delivered nothing: replaced, its records produced again",
                    extra={"records": len(held), "stuck_s": round(stuck_s, 1),
                           "bound": "kafka.replace_after_s"})
        discard_producer(self._producer, self.gateway_id)
        self._producer = self._next_producer()
        self._pending.clear()
        for pending in held:
            self._produce(replace(pending, producer=self._producers))
        self._progress_at = time.monotonic()

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            metrics.KAFKA_UP.set(0)
        log.warning("Kafka client error", extra={"error": str(error)})

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down cleanly."""
        stop = stop or threading.Event()
        stop_on_signals(stop)
        properties = connect_properties(session_expiry_s=self._settings.mqtt.session_expiry_s,
                                        receive_maximum=self._receive_maximum)
        self._client.connect_async(self._settings.mqtt.host, self._settings.mqtt.port,
                                   keepalive=30, clean_start=False, properties=properties)
        log.info("gateway started", extra={"gateway_id": self.gateway_id})
        try:
            while not stop.is_set():
                sock = self._client.buffered_socket()
                if sock is None:
                    self._connect_when_due()
                    self._producer.poll(self._wait_s())
                    metrics.IN_FLIGHT.set(len(self._pending))
                    self._check_delivering()
                    continue
                try:
                    self._serve(sock)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # a bug under paho's handling, or in paho itself
                    metrics.READY.set(0)
                    log.critical("the MQTT network loop failed", exc_info=True)
                    raise GatewayDeaf(
                        f"the MQTT network loop ended ({type(exc).__name__}: {exc}): this "
                        "gateway cannot receive; exiting so that it is restarted") from exc
                self._check_delivering()
                self._check_receiving()
        finally:
            self.shutdown()

    def _serve(self, sock: BufferedSocket) -> None:
        """One wake-up: read what arrived, hand it to Kafka, release the acks Kafka allows."""
        wait = 0.0 if sock.ready() else self._wait_s()
        early = self._woke + WAKE_INTERVAL_S - time.monotonic()
        if early > 0 and wait:
            time.sleep(early)
        readable, _, _ = select.select([sock], [sock] if sock.wants_write else [], [], wait)
        self._woke = time.monotonic()
        if (readable or sock.ready()) and not self._read(sock):
            return  # the connection was lost: paho closed it and said so
        self._producer.poll(0)
        metrics.IN_FLIGHT.set(len(self._pending))
        if self._client.want_write():  # packets paho queued from inside its own callbacks
            self._client.loop_write()
        if self._client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # keepalive
            sock.flush()

    def _read(self, sock: BufferedSocket) -> bool:
        """Take what arrived; False when the connection was lost meanwhile."""
        received = 0
        try:
            for _ in range(READ_BUDGET):
                publish = sock.next_publish()
                if publish is not None:
                    received += 1
                    self._on_publish(publish)
                elif sock.has_packet():  # any other packet, or the connection's end: paho's
                    if self._client.loop_read() or self._client.socket() is not sock:
                        return False
                elif not sock.fill():
                    break
            return True
        finally:
            metrics.RECEIVED.inc(received)

    def _wait_s(self) -> float:
        return DELIVERY_WAIT_S if self._pending else IDLE_WAIT_S

    def _connect_when_due(self) -> None:
        if time.monotonic() < self._connect_at:
            return
        try:
            self._client.reconnect()
        except OSError as exc:
            self._connect_later()
            log.warning("MQTT broker unreachable; retrying",
                        extra={"error": str(exc), "retry_in_s": self._reconnect_delay})

    def _connect_later(self) -> None:
        self._connect_at = time.monotonic() + self._reconnect_delay
        self._reconnect_delay = min(2 * self._reconnect_delay, RECONNECT_DELAYS_S[1])

    def shutdown(self) -> None:
        """Stop taking messages, flush Kafka, send the last acks, disconnect (session kept)."""
        self._stopping = True
        left = self._producer.flush(SHUTDOWN_FLUSH_SECONDS)
        metrics.IN_FLIGHT.set(len(self._pending))
        self._client.disconnect()  # written after the acks the flush released; closes the socket
        log.info("gateway stopped", extra={"unflushed_records": left,
                                           "in_flight": len(self._pending)})
