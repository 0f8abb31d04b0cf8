"""Device telemetry: one reading from a smart container, a quay crane, an RTG or a gate reader.

``Telemetry`` is a union discriminated by ``kind``; parse raw bytes with ``parse_telemetry``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from blake3 import blake3
from pydantic import Field, TypeAdapter, model_validator

from schemas.base import Message
from schemas.canonical import encode
from schemas.identifiers import (
    ContainerNumber,
    DeviceId,
    ImoNumber,
    UnLocode,
    UtcDatetime,
    YardBlock,
)

# Plausible physical ranges: values outside them are sensor faults or forgeries.
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
LoadKg = Annotated[float, Field(ge=0, le=120_000, description="spreader load in kg")]
TemperatureC = Annotated[float, Field(ge=-70, le=70)]
Percent = Annotated[float, Field(ge=0, le=100)]
Bay = Annotated[int, Field(ge=0, le=255)]
Row = Annotated[int, Field(ge=0, le=60)]
Tier = Annotated[int, Field(ge=0, le=255)]

CraneEvent = Literal["lift_start", "lift_end", "twistlock_lock", "twistlock_unlock", "heartbeat"]
RtgEvent = Literal["pick", "drop", "move", "heartbeat"]
GateEvent = Literal["gate_in", "gate_out", "heartbeat"]
TruckPlate = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9 -]{0,14}[A-Z0-9]$", description=(
    "the truck's plate as the gate's camera read it"))]


class Reading(Message):
    """Fields every device sends."""

    device_id: DeviceId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1, description="per-device monotonic counter")]
    boot: Annotated[int, Field(ge=0, le=2**32 - 1, description=(
        "boot counter, as MQTT Sparkplug's bdSeq: the device increments it whenever seq "
        "restarts (reboot, battery swap, firmware update); optional"))] | None = None
    ts: UtcDatetime
    port: UnLocode


def _require_container(kind: str, event: str, container_no: str | None) -> None:
    if event != "heartbeat" and container_no is None:
        raise ValueError(f"{kind} event {event!r} must name container_no (only heartbeat may omit)")


class ContainerReading(Reading):
    """A smart container: GPS tracker, door sensor, e-seal and reefer unit."""

    kind: Literal["container"] = "container"
    container_no: ContainerNumber
    lat: Latitude | None = None
    lon: Longitude | None = None
    door: Literal["open", "closed"] | None = None
    seal_id: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    seal_state: Literal["intact", "broken"] | None = None
    reefer_temp_c: TemperatureC | None = None
    reefer_setpoint_c: TemperatureC | None = None
    humidity_pct: Percent | None = None
    shock_g: Annotated[float, Field(ge=0, le=200)] | None = None
    battery_pct: Percent | None = None


class CraneReading(Reading):
    """A ship-to-shore quay crane: spreader and twistlock events."""

    kind: Literal["crane"] = "crane"
    event: CraneEvent
    container_no: ContainerNumber | None = None
    load_kg: LoadKg | None = None
    vessel_imo: ImoNumber | None = None
    bay: Bay | None = None
    row: Row | None = None
    tier: Tier | None = None
    wind_speed_ms: Annotated[float, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _names_container(self) -> CraneReading:
        _require_container(self.kind, self.event, self.container_no)
        return self


class RtgReading(Reading):
    """A rubber-tyred gantry crane in the yard."""

    kind: Literal["rtg"] = "rtg"
    event: RtgEvent
    container_no: ContainerNumber | None = None
    load_kg: LoadKg | None = None
    yard_block: YardBlock | None = None
    bay: Bay | None = None
    row: Row | None = None
    tier: Tier | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None

    @model_validator(mode="after")
    def _names_container(self) -> RtgReading:
        _require_container(self.kind, self.event, self.container_no)
        return self


class GateReading(Reading):
    """A terminal's truck gate: the OCR portal reading a container (and its truck) passing
    in or out."""

    kind: Literal["gate"] = "gate"
    event: GateEvent
    container_no: ContainerNumber | None = None
    lane: Annotated[int, Field(ge=1, le=64)] | None = None
    truck_plate: TruckPlate | None = None
    load_kg: Annotated[LoadKg, Field(description="the container's mass from the gate's "
                                     "weighbridge, the truck's tare deducted")] | None = None
    seal_id: Annotated[str, Field(min_length=1, max_length=32)] | None = None

    @model_validator(mode="after")
    def _names_container(self) -> GateReading:
        _require_container(self.kind, self.event, self.container_no)
        return self


AnyReading = ContainerReading | CraneReading | RtgReading | GateReading
Telemetry = Annotated[AnyReading, Field(discriminator="kind")]
DEVICE_KINDS: tuple[str, ...] = ("container", "crane", "rtg", "gate")

TELEMETRY_ADAPTER: TypeAdapter[AnyReading] = TypeAdapter(Telemetry)


READING_ID_PATTERN = r"^[0-9a-f]{32}$"


def reading_id(reading: AnyReading) -> str:
    """The identity of a reading: BLAKE3-128 of its canonical encoding, hex.

    A redelivery (the same reading again) has the same id; two readings that differ in anything
    (a seq restarted by a reboot, another ts, a forged value under a genuine seq) never do.
    ``(device_id, boot, seq)`` orders a device's readings; it does not identify them."""
    return hash_of_reading(encode(reading))


def hash_of_reading(canonical: bytes) -> str:
    """The reading id of a reading's canonical bytes (``reading_id`` when they are at hand)."""
    return blake3(canonical).hexdigest(length=16)


def parse_telemetry(raw: bytes | str) -> AnyReading:
    """Validate one JSON reading. Raises pydantic.ValidationError with per-field reasons."""
    return TELEMETRY_ADAPTER.validate_json(raw)
