"""Linked ports: a container declared once, at its port of origin, travels under customs
supervision to the other port of a combined port (Shunde ↔ Shekou) and is discharged there
without a second declaration, because the evidence of the leg says it was not touched.

A declaration may carry a ``Movement``; the streams worker follows it through its phases and,
at arrival, checks it (``TransitCheck``). A clean transit yields a ``DischargeCertificate``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.alert import Evidence
from schemas.base import Message
from schemas.canonical import encode
from schemas.identifiers import ContainerNumber, ImoNumber, SealNumber, UnLocode, UtcDatetime
from schemas.telemetry import Latitude, Longitude, TruckPlate

MovementId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$")]


class GeoPoint(Message):
    lat: Latitude
    lon: Longitude


class Corridor(Message):
    """The route a movement must keep to: a polyline and how far from it a fix may be."""

    corridor_id: MovementId
    waypoints: Annotated[tuple[GeoPoint, ...], Field(min_length=2, max_length=1000)]
    buffer_m: Annotated[float, Field(gt=0, le=50_000, description="allowed distance from the "
                                     "polyline, metres")]
    max_gap_s: Annotated[float, Field(gt=0, le=86_400, description=(
        "longest allowed silence of the container's tracker between departure and arrival"))
    ] = 1800.0


TransportMode = Literal["barge", "truck"]


class Movement(Message):
    """A supervised transit between the two ports of a combined port, declared at the origin.
    By barge, departure and arrival are the quay-crane lifts onto and off it; by truck, its
    passages out of the origin's gate and into the destination's."""

    movement_id: MovementId
    origin: UnLocode
    destination: UnLocode
    mode: TransportMode = Field("barge", description="barge (named by its IMO number, loaded "
                                "and discharged by quay cranes) or truck (named by its plate, "
                                "through the ports' gates)")
    carrier_imo: ImoNumber | None = Field(None, description="the barge: its IMO number")
    carrier_plate: TruckPlate | None = Field(None, description="the truck: its plate")
    corridor: Corridor
    seals: Annotated[tuple[SealNumber, ...], Field(min_length=1, description=(
        "seals applied at release: exactly these must be read at the destination"))]
    deadline: UtcDatetime

    @model_validator(mode="after")
    def _two_ports_one_carrier(self) -> Movement:
        if self.origin == self.destination:
            raise ValueError(f"a movement goes from one port to another, not {self.origin} "
                             "to itself")
        named = {"barge": self.carrier_imo, "truck": self.carrier_plate}
        if named[self.mode] is None or any(
                value is not None for mode, value in named.items() if mode != self.mode):
            raise ValueError(f"a {self.mode} movement names its carrier by "
                             f"{'carrier_imo' if self.mode == 'barge' else 'carrier_plate'} "
                             "only")
        return self

    @property
    def carrier(self) -> str:
        """The barge's IMO number or the truck's plate."""
        carrier = self.carrier_imo if self.mode == "barge" else self.carrier_plate
        assert carrier is not None  # the validator saw to it
        return carrier


class TransitPhase(StrEnum):
    LODGED = "lodged"  # declared, not released yet
    RELEASED = "released"  # released at the origin: its seals are recorded
    DEPARTED = "departed"  # lifted onto the barge (out of the gate on the truck) at the origin
    ARRIVED = "arrived"  # lifted off the barge (in through the gate) at the destination
    DISCHARGED = "discharged"  # every check passed: certificate issued
    DISCREPANCY = "discrepancy"  # a check failed
    OVERDUE = "overdue"  # the deadline passed before arrival


class CheckName(StrEnum):
    SEALS = "seals"  # the seals read at the destination are exactly those of the release
    INTEGRITY = "integrity"  # no seal broken, no door opened between release and arrival
    CORRIDOR = "corridor"  # every fix within the corridor's buffer
    REPORTING = "reporting"  # no silence longer than the corridor allows
    DEADLINE = "deadline"  # arrived before the deadline
    MASS = "mass"  # the destination's crane (or gate weighbridge) agrees with the declared mass
    IDENTITY = "identity"  # carried by the declared barge or truck


class TransitCheck(Message):
    check: CheckName
    passed: bool
    detail: Annotated[str, Field(max_length=500)]
    evidence: tuple[Evidence, ...] = ()


class TransitEvent(Message):
    """One step of a movement (value of ``transit.movements.v1``, keyed by container)."""

    movement_id: MovementId
    container_no: ContainerNumber
    declaration_id: str
    origin: UnLocode
    destination: UnLocode
    phase: TransitPhase
    at: UtcDatetime
    checks: tuple[TransitCheck, ...] = ()
    evidence: tuple[Evidence, ...] = ()


class RecordPosition(Message):
    """Where a Kafka record is: what `smartport receipt` proves, once it is anchored."""

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


class PortEvent(Message):
    """A DCSA Track & Trace event the terminal derived (value of ``dcsa.events.v1``, keyed by
    container): ``dcsa`` is the event as DCSA defines it — TNT 2.2 (event domain 2.0.2):
    equipment events ``LOAD``, ``DISC`` of a movement, ``GTIN``, ``GTOT`` of a declared
    container at a truck gate; shipment events of document type ``CUS`` when its customs
    declaration changes status; and IoT events shaped as event domain 3.1's (door, geofence;
    see ``streams.transit.iot``) — the rest says what it was derived from."""

    container_no: ContainerNumber
    movement_id: MovementId | None = None  # LOAD and DISC: the movement they are steps of
    declaration_id: str
    dcsa: dict[str, Any] = Field(description="the DCSA event (camelCase, DCSA codes)")
    evidence: tuple[Evidence, ...] = Field((), description="the readings it was derived from; "
                                           "each record can be proven with `smartport receipt`")
    declaration_record: RecordPosition | None = Field(None, description=(
        "a customs status event: the declaration version it was derived from"))


class Clearance(Message):
    """What customs at the destination subscribes to (value of ``customs.clearance.v1``,
    compacted, keyed by container): ``green`` — declared once, transit verified: release
    without a second declaration — or ``held`` with the reasons."""

    container_no: ContainerNumber
    movement_id: MovementId
    declaration_id: str
    destination: UnLocode
    status: Literal["green", "held"]
    reasons: tuple[Annotated[str, Field(max_length=500)], ...] = ()
    at: UtcDatetime


# What a terminal signs: these bytes, then the certificate's canonical encoding without its
# signature (domain-separated: a signature over a certificate is over nothing else).
CERTIFICATE_DOMAIN = b"smartport/discharge-certificate/v1\n"
HexKeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class TerminalSignature(Message):
    """The issuing terminal's Ed25519 signature of a certificate."""

    alg: Literal["ed25519"] = "ed25519"
    key_id: HexKeyId = Field(description="SHA-256 of the raw public key: what verifiers trust "
                             "(`smartport terminal-key`)")
    public_key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="raw, hex")]
    value: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$", description=(
        "signature over CERTIFICATE_DOMAIN ‖ the canonical certificate without `signature`"))]


class DischargeCertificate(Message):
    """A clean transit (value of ``transit.certificates.v1``, anchored like every record):
    customs at the destination accepts the origin's declaration on the strength of it. Signed
    by the terminal that issued it (who vouches for it) and anchored (since when it exists
    unchanged)."""

    kind: Literal["discharge_certificate"] = "discharge_certificate"
    movement_id: MovementId
    container_no: ContainerNumber
    declaration_id: str
    declaration_version: Annotated[int, Field(ge=1)]
    origin: UnLocode
    destination: UnLocode
    corridor_id: MovementId
    mode: TransportMode
    carrier: Annotated[str, Field(min_length=1, max_length=16, description=(
        "the barge's IMO number or the truck's plate"))]
    released_at: UtcDatetime
    departed_at: UtcDatetime
    arrived_at: UtcDatetime
    checks: tuple[TransitCheck, ...]
    issued_by: Annotated[str, Field(min_length=1, max_length=128, description=(
        "the terminal's streams application id"))]
    signature: TerminalSignature | None = None

    def signed_bytes(self) -> bytes:
        """What the terminal's signature covers."""
        return CERTIFICATE_DOMAIN + encode(self.model_copy(update={"signature": None}))

    @model_validator(mode="after")
    def _clean(self) -> DischargeCertificate:
        if not self.checks or not all(check.passed for check in self.checks):
            raise ValueError("a discharge certificate states checks that all passed")
        return self
