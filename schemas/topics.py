"""Topic names and MQTT topic layouts: a public interface, defined once here."""

from __future__ import annotations

import re
from dataclasses import dataclass

TELEMETRY = "telemetry.v1"
DECLARATIONS = "declarations.v1"
ALERTS = "customs.alerts.v1"
ALERT_COMMANDS = "customs.alert-commands.v1"
TELEMETRY_DLQ = "telemetry.dlq.v1"
ANCHORS = "anchors.v1"
# Compacted: the latest anchors.v1 record of each anchored (topic, partition), where the anchorer
# resumes it — read at every start in place of the whole of anchors.v1, and kept past retention.
ANCHOR_HEADS = "anchors.heads.v1"
TRANSIT = "transit.movements.v1"  # linked ports: each step of a declared movement
CERTIFICATES = "transit.certificates.v1"  # ... and the discharge certificate of a clean one
CLEARANCE = "customs.clearance.v1"  # ... and, per container, green or held
PORT_EVENTS = "dcsa.events.v1"  # DCSA Track & Trace equipment events the terminal derived

KAFKA_TOPICS: tuple[str, ...] = (TELEMETRY, DECLARATIONS, ALERTS, ALERT_COMMANDS, TELEMETRY_DLQ,
                                 ANCHORS, ANCHOR_HEADS, TRANSIT, CERTIFICATES, CLEARANCE,
                                 PORT_EVENTS)
# Compacted topics keep the latest value per key (the current declaration of a container).
COMPACTED_TOPICS = frozenset({DECLARATIONS, CLEARANCE, ANCHOR_HEADS})
# Topics read by keyed stream tasks must have the same partition count (co-partitioning).
CO_PARTITIONED_TOPICS: tuple[str, ...] = (TELEMETRY, DECLARATIONS, ALERT_COMMANDS)

# MQTT: port/<UN/LOCODE>/<kind>/<device_id>/telemetry, QoS 1.
MQTT_TELEMETRY_FILTER = "port/+/+/+/telemetry"
MQTT_ALERTS_FILTER = "port/+/alerts/#"
_TELEMETRY_TOPIC = re.compile(r"^port/([^/]+)/([^/]+)/([^/]+)/telemetry$")


def mqtt_telemetry_topic(port: str, kind: str, device_id: str) -> str:
    return f"port/{port}/{kind}/{device_id}/telemetry"


def mqtt_alert_topic(port: str, severity: str, container_no: str) -> str:
    return f"port/{port}/alerts/{severity}/{container_no}"


def telemetry_filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a filter within port/<locode>/<kind>/<device_id>/telemetry,
    or None. Each of the three middle levels is ``+`` or a literal."""
    levels = topic_filter.split("/")
    if len(levels) != 5 or levels[0] != "port" or levels[4] != "telemetry":
        return (f"{topic_filter!r} is not a telemetry filter: use port/<locode>/<kind>/"
                "<device_id>/telemetry with + for any level, e.g. port/+/crane/+/telemetry")
    for level in levels[1:4]:
        if not level or (level != "+" and ("+" in level or "#" in level)):
            return f"{topic_filter!r}: each level is + or a name, not {level!r}"
    return None


def check_telemetry_filters(filters: tuple[str, ...]) -> tuple[str, ...]:
    """``filters``, or ValueError naming the first that is not a telemetry filter."""
    for topic_filter in filters:
        problem = telemetry_filter_problem(topic_filter)
        if problem:
            raise ValueError(problem)
    return filters


def shared_subscription(group: str, topic_filter: str) -> str:
    """MQTT v5 shared subscription: the broker splits messages among the group's sessions."""
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    port: str
    kind: str
    device_id: str


def parse_telemetry_topic(topic: str) -> TelemetryTopic | None:
    """The port, kind and device id named by a telemetry topic, or None if it is not one."""
    match = _TELEMETRY_TOPIC.fullmatch(topic)
    return TelemetryTopic(*match.groups()) if match else None
