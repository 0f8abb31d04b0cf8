"""Prometheus metrics of the gateway (exposed with --metrics-port on 127.0.0.1)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("smartport_gateway_received", "MQTT messages received")
PRODUCED = Counter("smartport_gateway_produced", "records Kafka acknowledged", ["topic"])
ACKNOWLEDGED = Counter("smartport_gateway_acknowledged", "MQTT messages acknowledged (PUBACK)")
DLQ = Counter("smartport_gateway_dlq", "messages rejected to the DLQ", ["reason"])
PRODUCE_ERRORS = Counter(
    "smartport_gateway_produce_errors", "permanent Kafka produce failures", ["topic", "error"]
)
IN_FLIGHT = Gauge("smartport_gateway_in_flight", "messages received but not yet acknowledged")
PRODUCE_LATENCY = Histogram(
    "smartport_gateway_produce_latency_seconds",
    "from MQTT receipt to Kafka acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
KAFKA_UP = Gauge("smartport_gateway_kafka_up", "1 when the Kafka brokers are reachable")
MQTT_CONNECTED = Gauge("smartport_gateway_mqtt_connected", "1 when connected to the MQTT broker")
READY = Gauge("smartport_gateway_ready",
              "1 when subscribed with a live network loop: able to receive; 0 otherwise")
