"""Customs alerts: one lifecycle per (container, rule), with evidence."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from schemas.base import Message
from schemas.envelope import GatewayEnvelope
from schemas.identifiers import ContainerNumber, DeviceId, UnLocode, UtcDatetime
from schemas.telemetry import READING_ID_PATTERN


class Rule(StrEnum):
    """Rule names: part of the public alert format."""

    WEIGHT_MISMATCH = "weight_mismatch"
    SEAL_BROKEN = "seal_broken"
    DOOR_OPENED = "door_opened"
    REEFER_EXCURSION = "reefer_excursion"
    UNDECLARED_CONTAINER = "undeclared_container"
    HOLD_VIOLATION = "hold_violation"
    VESSEL_MISMATCH = "vessel_mismatch"
    ZONE_VIOLATION = "zone_violation"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"


class Evidence(Message):
    """A reference to the telemetry record that triggered or updated an alert."""

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    device_id: DeviceId
    seq: Annotated[int, Field(ge=0)]
    boot: Annotated[int, Field(ge=0)] | None = None
    reading_id: Annotated[str, Field(pattern=READING_ID_PATTERN)] | None = Field(
        default=None, description="the reading's identity; absent in alerts raised before it")

    @classmethod
    def of(cls, envelope: GatewayEnvelope, topic: str, partition: int, offset: int) -> Evidence:
        """The reference to one telemetry record."""
        reading = envelope.reading
        return cls(topic=topic, partition=partition, offset=offset, device_id=reading.device_id,
                   seq=reading.seq, boot=reading.boot, reading_id=envelope.reading_id)


Scalar = str | float | int | bool | None


class Alert(Message):
    """One event in an alert's lifecycle (value of ``customs.alerts.v1``)."""

    alert_id: Annotated[str, Field(min_length=1, max_length=128)]
    rule: Rule
    severity: Severity
    state: AlertState
    container_no: ContainerNumber
    declaration_id: str | None = None
    port: UnLocode
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    count: Annotated[int, Field(ge=1)]
    version: Annotated[int, Field(ge=1, description="increments with every lifecycle event")]
    measured: dict[str, Scalar] = Field(default_factory=dict)
    declared: dict[str, Scalar] = Field(default_factory=dict)
    evidence: tuple[Evidence, ...] = ()
