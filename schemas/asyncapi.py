"""The AsyncAPI 3 document of every MQTT and Kafka channel, generated from the models.

``schemas/asyncapi.yaml`` is this document written out; a test keeps the two identical, so
regenerate with ``smartport schemas asyncapi`` after changing a model or a topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from schemas import topics
from schemas.telemetry import DEVICE_KINDS

ASYNCAPI_PATH = Path(__file__).with_name("asyncapi.yaml")
_SCHEMA_REF = "#/components/schemas/"


def _channel(
    address: str, server: str, message: str, description: str, key: str | None = None
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "servers": [{"$ref": f"#/servers/{server}"}],
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }
    if key:
        channel["bindings"] = {"kafka": {"key": {"type": "string", "description": key}}}
    return channel


def build() -> dict[str, Any]:
    """The AsyncAPI document as a plain dict."""
    from schemas.registry import MESSAGES, component_schemas

    message_refs, definitions = component_schemas(_SCHEMA_REF)
    channels = {
        "deviceTelemetry": _channel(
            "port/{locode}/{kind}/{device_id}/telemetry",
            "mqtt",
            "Telemetry",
            "One reading per message, JSON, QoS 1. The topic must match the payload's port, "
            "kind and device_id.",
        ),
        "fieldAlerts": _channel(
            "port/{locode}/alerts/{severity}/{container_no}",
            "mqtt",
            "Alert",
            "Customs alerts for field officers, QoS 1.",
        ),
        "telemetry": _channel(
            topics.TELEMETRY, "kafka", "GatewayEnvelope",
            "Validated readings in the gateway envelope.", "container number, else device id",
        ),
        "declarations": _channel(
            topics.DECLARATIONS, "kafka", "Declaration",
            "Customs declarations, compacted: the latest version per container.",
            "container number",
        ),
        "alerts": _channel(
            topics.ALERTS, "kafka", "Alert", "Alert lifecycle events.", "container number"
        ),
        "alertCommands": _channel(
            topics.ALERT_COMMANDS, "kafka", "AlertCommand",
            "Officers' acknowledgements and closings of open alerts.", "container number"
        ),
        "telemetryDlq": _channel(
            topics.TELEMETRY_DLQ, "kafka", "DlqRecord",
            "Rejected input with raw bytes and reason.", "device id or 'unknown'",
        ),
        "anchors": _channel(
            topics.ANCHORS, "kafka", "AnchorRecord",
            "Merkle batch manifests with their aggregate proof and ledger reference.", "batch id",
        ),
        "anchorHeads": _channel(
            topics.ANCHOR_HEADS, "kafka", "AnchorRecord",
            "Compacted: the latest anchors.v1 record of each anchored topic partition, where "
            "the anchorer resumes it.", "topic/partition",
        ),
        "transitMovements": _channel(
            topics.TRANSIT, "kafka", "TransitEvent",
            "Linked ports: each step of a declared movement between two ports (lodged, "
            "released, departed, arrived with its checks, discharged, discrepancy, overdue).",
            "container number",
        ),
        "portEvents": _channel(
            topics.PORT_EVENTS, "kafka", "PortEvent",
            "DCSA Track & Trace equipment events the terminal derived (LOAD, DISC; TNT 2.2, "
            "event domain 2.0.2), each with the readings it was derived from.",
            "container number",
        ),
        "clearance": _channel(
            topics.CLEARANCE, "kafka", "Clearance",
            "Linked ports, compacted: per container, green (declared once, transit verified: "
            "release without a second declaration) or held with the reasons.",
            "container number",
        ),
        "dischargeCertificates": _channel(
            topics.CERTIFICATES, "kafka", "DischargeCertificate",
            "Linked ports: a clean transit's certificate, every check passed; anchored like "
            "every record, so customs at the destination verifies it offline.",
            "container number",
        ),
    }
    channels["deviceTelemetry"]["parameters"] = {
        "locode": {"description": "UN/LOCODE of the port, e.g. CNSHK"},
        "kind": {"enum": list(DEVICE_KINDS)},
        "device_id": {"description": "the publishing device's id"},
    }
    channels["fieldAlerts"]["parameters"] = {
        "locode": {"description": "UN/LOCODE of the port"},
        "severity": {"enum": ["info", "warning", "critical"]},
        "container_no": {"description": "ISO 6346 container number"},
    }
    operations = {
        "devicePublishesTelemetry": ("send", "deviceTelemetry"),
        "gatewayConsumesTelemetry": ("receive", "deviceTelemetry"),
        "gatewayProducesTelemetry": ("send", "telemetry"),
        "gatewayProducesDlq": ("send", "telemetryDlq"),
        "intakeProducesDeclarations": ("send", "declarations"),
        "streamsConsumeTelemetry": ("receive", "telemetry"),
        "streamsConsumeDeclarations": ("receive", "declarations"),
        "streamsProduceAlerts": ("send", "alerts"),
        "streamsPublishFieldAlerts": ("send", "fieldAlerts"),
        "officersSendAlertCommands": ("send", "alertCommands"),
        "streamsConsumeAlertCommands": ("receive", "alertCommands"),
        "streamsProduceTransitMovements": ("send", "transitMovements"),
        "streamsProduceDischargeCertificates": ("send", "dischargeCertificates"),
        "streamsProduceClearance": ("send", "clearance"),
        "streamsProducePortEvents": ("send", "portEvents"),
        "customsConsumeClearance": ("receive", "clearance"),
        "anchorerProducesAnchors": ("send", "anchors"),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "smartport",
            "version": "1.0.0",
            "description": "Every MQTT and Kafka channel of the smartport pipeline. "
            "Generated from the pydantic models by schemas/asyncapi.py.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "mqtt": {"host": "127.0.0.1:1883", "protocol": "mqtt", "protocolVersion": "5",
                     "security": [{"$ref": "#/components/securitySchemes/mqttUser"}]},
            "mqtts": {"host": "127.0.0.1:8883", "protocol": "secure-mqtt",
                      "protocolVersion": "5",
                      "security": [{"$ref": "#/components/securitySchemes/mqttUser"}]},
            "kafka": {"host": "127.0.0.1:9092", "protocol": "kafka"},
        },
        "channels": channels,
        "operations": {
            name: {"action": action, "channel": {"$ref": f"#/channels/{channel}"}}
            for name, (action, channel) in operations.items()
        },
        "components": {
            "messages": {
                name: {"name": name, "contentType": "application/json",
                       "payload": message_refs[name]}
                for name in MESSAGES
            },
            "schemas": definitions,
            "securitySchemes": {"mqttUser": {
                "type": "userPassword",
                "description": "Every MQTT client logs in; the broker's ACL allows a device its "
                "own telemetry topic, a port's edge gateway (edge-<locode>) its port's, "
                "smartport-gateway reading telemetry, smartport-streams publishing alerts, "
                "customs-officer reading alerts (deploy/mqtt_access.py)."}},
        },
    }


def render() -> str:
    return yaml.safe_dump(build(), sort_keys=True, allow_unicode=True, width=100)


def write(path: Path = ASYNCAPI_PATH) -> Path:
    path.write_text(render())
    return path
