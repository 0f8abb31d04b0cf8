"""Customs alerts: one lifecycle per (container, rule), with evidence."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

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
    TRANSIT_DISCREPANCY = "transit_discrepancy"  # a linked-port movement failed a check
    TRANSIT_OVERDUE = "transit_overdue"  # ... or missed its deadline


# Raised by a linked-port movement's checks (streams.transit), not by one reading at a terminal.
TRANSIT_RULES = frozenset({Rule.TRANSIT_DISCREPANCY, Rule.TRANSIT_OVERDUE})


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"  # the condition ended (non-critical rules only)
    ACKNOWLEDGED = "acknowledged"  # an officer saw it; it stays open
    CLOSED = "closed"  # an officer closed it: the only end of a critical alert


# Who acts on an alert: an officer's name or badge, as customs records it.
OfficerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.@'-]{0,63}$")]
AlertId = Annotated[str, Field(min_length=1, max_length=128)]


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

    alert_id: AlertId
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
    officer: OfficerId | None = Field(None, description="who acknowledged or closed it")
    reason: Annotated[str, Field(max_length=500)] | None = None


class AlertCommand(Message):
    """An officer's acknowledgement or closing of an open alert (value of
    ``customs.alert-commands.v1``, keyed by container number). It names the incident by the
    reading that raised it, so a command never acts on a later incident with the same id."""

    alert_id: AlertId
    container_no: ContainerNumber
    port: UnLocode
    raised_by: Annotated[str, Field(pattern=READING_ID_PATTERN)] | None = Field(
        None, description="reading id of the alert's raising evidence")
    action: Literal["acknowledge", "close"]
    officer: OfficerId
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    at: UtcDatetime
