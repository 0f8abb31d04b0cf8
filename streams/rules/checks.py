"""One function per rule. Each looks at one reading and says whether the rule's condition
holds (a Finding with ``active=True``), has ended (``active=False``), or is not addressed by
this reading (None). Durations (grace periods) use event time and live in ContainerState."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import Declaration, DeclarationStatus, Rule
from schemas.alert import Scalar
from schemas.declaration import RELEASED_STATUSES
from schemas.telemetry import AnyReading, ContainerReading, CraneReading, RtgReading
from schemas.transit import Movement
from streams.rules.state import ContainerState
from streams.rules.thresholds import Thresholds
from streams.transit.state import IN_TRANSIT

# What moves a container: forbidden while it is held. A truck leaving the gate with it too.
MOVES = frozenset({"lift_start", "lift_end", "twistlock_lock", "twistlock_unlock", "pick", "drop",
                   "move", "gate_out"})


@dataclass(frozen=True)
class Finding:
    rule: Rule
    active: bool
    measured: dict[str, Scalar] = field(default_factory=dict)
    declared: dict[str, Scalar] = field(default_factory=dict)
    worst: float | None = None  # the value an update keeps the worst of (larger is worse)


Check = Callable[[AnyReading, Declaration | None, ContainerState, Thresholds], Finding | None]


def in_transit(declaration: Declaration | None, state: ContainerState) -> Movement | None:
    """The container's declared movement while it is under way (released, departed, late):
    its seals, its barge and its mass at the destination are then the transit checks' to
    judge, once, at arrival."""
    transit = state.transit
    if declaration is None or declaration.movement is None or transit is None or (
            transit.movement_id != declaration.movement.movement_id
            or transit.phase not in IN_TRANSIT):
        return None
    return declaration.movement


def weight_mismatch(reading: AnyReading, declaration: Declaration | None,
                    state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is None or not isinstance(reading, CraneReading | RtgReading) or (
            reading.load_kg is None):
        return None
    movement = in_transit(declaration, state)
    if movement is not None and reading.port == movement.destination:
        return None
    difference = abs(reading.load_kg - declaration.gross_mass_kg)
    tolerance = max(thresholds.weight_tolerance_ratio * declaration.gross_mass_kg,
                    thresholds.weight_tolerance_kg)
    return Finding(Rule.WEIGHT_MISMATCH, difference > tolerance,
                   {"load_kg": reading.load_kg, "difference_kg": round(difference, 1)},
                   {"gross_mass_kg": declaration.gross_mass_kg, "tolerance_kg": tolerance},
                   worst=difference)


def seal_broken(reading: AnyReading, declaration: Declaration | None,
                state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is None or not isinstance(reading, ContainerReading):
        return None
    if reading.seal_state is None and reading.seal_id is None:
        return None
    wrong_seal = reading.seal_id is not None and reading.seal_id not in declaration.seal_numbers \
        and in_transit(declaration, state) is None
    broken = reading.seal_state == "broken"
    return Finding(Rule.SEAL_BROKEN, broken or wrong_seal,
                   {"seal_state": reading.seal_state, "seal_id": reading.seal_id},
                   {"seal_numbers": ",".join(declaration.seal_numbers)})


def door_opened(reading: AnyReading, declaration: Declaration | None,
                state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is None or not isinstance(reading, ContainerReading) or reading.door is None:
        return None
    return Finding(Rule.DOOR_OPENED,
                   reading.door == "open" and declaration.status not in RELEASED_STATUSES,
                   {"door": reading.door}, {"status": declaration.status.value})


def reefer_excursion(reading: AnyReading, declaration: Declaration | None,
                     state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if (declaration is None or declaration.reefer is None
            or not isinstance(reading, ContainerReading) or reading.reefer_temp_c is None):
        return None
    low, high = declaration.reefer.min_c, declaration.reefer.max_c
    temperature = reading.reefer_temp_c
    outside = max(low - temperature, temperature - high, 0.0)
    duration = state.note_reefer(reading.ts, outside > 0)
    return Finding(Rule.REEFER_EXCURSION,
                   outside > 0 and duration >= thresholds.reefer_grace_s,
                   {"reefer_temp_c": temperature, "out_of_range_s": duration},
                   {"min_c": low, "max_c": high}, worst=outside)


def undeclared_container(reading: AnyReading, declaration: Declaration | None,
                         state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is not None:
        return Finding(Rule.UNDECLARED_CONTAINER, False)
    duration = state.note_undeclared(reading.ts)
    return Finding(Rule.UNDECLARED_CONTAINER, duration >= thresholds.undeclared_grace_s,
                   {"undeclared_for_s": duration}, {})


def hold_violation(reading: AnyReading, declaration: Declaration | None,
                   state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is None or isinstance(reading, ContainerReading) or reading.event not in MOVES:
        return None
    held = declaration.status == DeclarationStatus.HELD
    return Finding(Rule.HOLD_VIOLATION, held, {"event": reading.event, "device_id":
                   reading.device_id}, {"status": declaration.status.value})


def vessel_mismatch(reading: AnyReading, declaration: Declaration | None,
                    state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if declaration is None or not isinstance(reading, CraneReading) or reading.vessel_imo is None:
        return None
    movement = in_transit(declaration, state)
    if movement is not None and reading.port in (movement.origin, movement.destination):
        return None  # a lift of the movement: its barge is judged by the transit's identity
    return Finding(Rule.VESSEL_MISMATCH, reading.vessel_imo != declaration.vessel_imo,
                   {"vessel_imo": reading.vessel_imo}, {"vessel_imo": declaration.vessel_imo})


def zone_violation(reading: AnyReading, declaration: Declaration | None,
                   state: ContainerState, thresholds: Thresholds) -> Finding | None:
    if (declaration is None or not isinstance(reading, RtgReading) or reading.yard_block is None
            or declaration.allowed_yard_blocks is None):
        return None
    outside = reading.yard_block not in declaration.allowed_yard_blocks
    if outside and reading.event != "drop":
        return None  # passing through is not placing
    return Finding(Rule.ZONE_VIOLATION, outside, {"yard_block": reading.yard_block},
                   {"allowed_yard_blocks": ",".join(declaration.allowed_yard_blocks)})


CHECKS: dict[Rule, Check] = {
    Rule.WEIGHT_MISMATCH: weight_mismatch,
    Rule.SEAL_BROKEN: seal_broken,
    Rule.DOOR_OPENED: door_opened,
    Rule.REEFER_EXCURSION: reefer_excursion,
    Rule.UNDECLARED_CONTAINER: undeclared_container,
    Rule.HOLD_VIOLATION: hold_violation,
    Rule.VESSEL_MISMATCH: vessel_mismatch,
    Rule.ZONE_VIOLATION: zone_violation,
}
