"""A simulated linked port: containers trucked in through Shunde's gate (CNSUD), declared and
released there, go down the river by barge — every fourth by road, on a truck — to Shekou
(CNSHK) on one declaration, each leg witnessed by the container's own tracker and by the quay
cranes that load and discharge the barge or the gates the truck passes — or with one injected
transit fault; every third leaves Shekou by truck, through its gate.

Pure and reproducible like ``ingest.fleet``: the same seed and start give the same messages.
The truth names, per faulty container, the alert it must raise and the check it must fail;
every other container must yield exactly one discharge certificate.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.fleet import EVENT_TIME_LAG, HOME_PORT, SimMessage
from schemas import Declaration, DeclarationStatus, Rule, encode, iso6346
from schemas.topics import mqtt_telemetry_topic
from schemas.transit import CheckName, Corridor, GeoPoint, Movement

LINKED_PORT = "CNSUD"  # Shunde: the river port linked to Shekou
# A plausible river route from Shunde's wharf to Shekou's barge berths (not a survey).
RIVER = ((22.8040, 113.2930), (22.7330, 113.4150), (22.6240, 113.5580), (22.5510, 113.6870),
         (22.4950, 113.8230), (22.4800, 113.9000))
CORRIDOR = Corridor(corridor_id="CNSUD-CNSHK-river", buffer_m=1500, max_gap_s=600,
                    waypoints=tuple(GeoPoint(lat=lat, lon=lon) for lat, lon in RIVER))
# ... and a plausible road from Shunde's gate to Shekou's, for the trucks.
ROAD = ((22.8040, 113.2930), (22.7810, 113.5020), (22.7020, 113.6800), (22.6010, 113.8420),
        (22.4800, 113.9000))
ROAD_CORRIDOR = Corridor(corridor_id="CNSUD-CNSHK-road", buffer_m=800, max_gap_s=600,
                         waypoints=tuple(GeoPoint(lat=lat, lon=lon) for lat, lon in ROAD))
BY_TRUCK = 4  # every fourth container goes by truck, the others by barge
LEG = timedelta(minutes=30)  # departure to discharge, event time (compressed), give or take
LEG_SPREAD_S = (-240, 180)  # ... this: currents and locks (arrival stays before the deadline)
FIX_EVERY = timedelta(minutes=2)
DEADLINE_AFTER = timedelta(minutes=40)  # after the release
AFTERWARDS = 3  # tracker reports in the destination's yard after the discharge, 5 min apart
TRUCKED_OUT = 3  # every third container leaves the destination by truck, through its gate
# Transit faults and what each must cause: (rule, failed check; None for an overdue leg).
FAULTS: dict[str, tuple[Rule, CheckName | None]] = {
    "seal_swapped": (Rule.TRANSIT_DISCREPANCY, CheckName.SEALS),
    "door_opened": (Rule.TRANSIT_DISCREPANCY, CheckName.INTEGRITY),
    "corridor_deviation": (Rule.TRANSIT_DISCREPANCY, CheckName.CORRIDOR),
    "tracker_silent": (Rule.TRANSIT_DISCREPANCY, CheckName.REPORTING),
    "mass_mismatch": (Rule.TRANSIT_DISCREPANCY, CheckName.MASS),
    "overdue": (Rule.TRANSIT_OVERDUE, None),
}


@dataclass(frozen=True)
class LinkedConfig:
    containers: int = 200  # the pilot moved 200 TEU
    seed: int = 1
    fault_rate: float = 0.0  # share of containers with one injected transit fault
    origin: str = LINKED_PORT
    destination: str = HOME_PORT
    start: datetime = field(default_factory=lambda: (
        datetime.now(UTC) - EVENT_TIME_LAG).replace(microsecond=0))

    def __post_init__(self) -> None:
        if self.containers < 1 or not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("a linked-port run needs at least one container and a fault "
                             f"rate between 0 and 1, got {self.containers}, {self.fault_rate}")


@dataclass(frozen=True)
class Transit:
    declaration: Declaration
    fault: str | None

    @property
    def expected(self) -> tuple[Rule, CheckName | None] | None:
        return FAULTS[self.fault] if self.fault else None


@dataclass(frozen=True)
class _Step:
    """One reading of a container's script, numbered (seq) once all scripts are merged."""

    at: datetime
    order: int  # the container's index: a stable tie-break between scripts
    port: str
    kind: str
    device: str
    body: dict[str, Any]
    truth: tuple[str, Rule] | None


class LinkedPorts:
    def __init__(self, config: LinkedConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._barges = [self._imo() for _ in range(max(1, config.containers // 40))]
        self._numbers: set[str] = set()
        self.transits = [self._transit(index) for index in range(config.containers)]

    @property
    def declarations(self) -> list[Declaration]:
        return [transit.declaration for transit in self.transits]

    def _imo(self) -> str:
        digits = "".join(str(self._rng.randrange(1, 10)) for _ in range(6))
        check = sum(int(d) * w for d, w in zip(digits, range(7, 1, -1), strict=True)) % 10
        return f"{digits}{check}"

    def _container_number(self) -> str:
        while (number := iso6346.with_check_digit(
                f"SUDU{self._rng.randrange(10**6):06d}")) in self._numbers:
            pass
        self._numbers.add(number)
        return number

    def _transit(self, index: int) -> Transit:
        rng, config = self._rng, self.config
        number = self._container_number()
        released = config.start + timedelta(seconds=rng.randrange(0, 480))
        barge = rng.choice(self._barges)  # drawn for every leg: a seed gives the same faults
        carrier: dict[str, Any] = {"mode": "barge", "carrier_imo": barge, "corridor": CORRIDOR}
        if index % BY_TRUCK == BY_TRUCK - 1:
            carrier = {"mode": "truck", "carrier_plate": f"YUE E{(index * 7919) % 10**5:05d}",
                       "corridor": ROAD_CORRIDOR}
        movement = Movement(
            movement_id=f"{config.origin}-MV-{index + 1:05d}", origin=config.origin,
            destination=config.destination, **carrier,
            seals=(f"SL{rng.randrange(10**7):07d}",), deadline=released + DEADLINE_AFTER)
        declaration = Declaration(
            declaration_id=f"{config.origin}-DEC-{index + 1:06d}", container_no=number,
            status=DeclarationStatus.RELEASED, gross_mass_kg=float(rng.randrange(8_000, 28_000)),
            seal_numbers=movement.seals, hs_codes=("940360",),
            vessel_imo=self._imo(), voyage=f"{rng.randrange(1, 99):03d}W",
            port_of_loading=config.destination, port_of_discharge="NLRTM", movement=movement,
            version=1, updated_at=released)
        fault = rng.choice(sorted(FAULTS)) if rng.random() < config.fault_rate else None
        return Transit(declaration, fault)

    def equipment_events(self) -> Counter[tuple[str, str]]:
        """The DCSA equipment events the run must yield, (container, code): the truth of the
        gates and the cranes the scripts below pass."""
        expected: Counter[tuple[str, str]] = Counter()
        for index, transit in enumerate(self.transits):
            number, movement = transit.declaration.container_no, transit.declaration.movement
            assert movement is not None
            arrives = transit.fault != "overdue"
            expected[number, "GTIN"] += 1  # trucked in to the origin
            if movement.mode == "barge":
                expected[number, "LOAD"] += 1
                expected[number, "DISC"] += arrives
            else:
                expected[number, "GTOT"] += 1
                expected[number, "GTIN"] += arrives
            expected[number, "GTOT"] += arrives and index % TRUCKED_OUT == 0
        return +expected  # without the zero counts

    def iot_events(self) -> Counter[tuple[str, str]]:
        """The IoT events the run must yield, (container, code): each leg's tracker leaves
        the origin's geofence (GFO) and enters the destination's (GFI) — but a stuck one's —
        and a door opened mid-leg is opened (DRO) and closed again (DRC)."""
        expected: Counter[tuple[str, str]] = Counter()
        for transit in self.transits:
            number = transit.declaration.container_no
            if transit.fault != "overdue":
                expected.update([(number, "GFO"), (number, "GFI")])
            if transit.fault == "door_opened":
                expected.update([(number, "DRO"), (number, "DRC")])
        return expected

    # -- messages ----------------------------------------------------------------------------

    def messages(self) -> Iterator[SimMessage]:
        """Every transit's messages, merged in event-time order; each device counts its
        readings in that order."""
        scripts = [self._script(index, transit) for index, transit in enumerate(self.transits)]
        seqs: dict[str, int] = {}
        for step in heapq.merge(*scripts, key=lambda step: (step.at, step.order)):
            seq = seqs[step.device] = seqs.get(step.device, 0) + 1
            reading = {"kind": step.kind, "device_id": step.device, "seq": seq,
                       "ts": step.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       "port": step.port, **step.body}
            yield SimMessage(mqtt_telemetry_topic(step.port, step.kind, step.device),
                             encode(reading), step.device, seq, truth=step.truth)

    def _script(self, index: int, transit: Transit) -> list[_Step]:
        """One container's leg: release, departure from the origin (a barge's loading crane,
        a truck's gate), fixes along the river or the road, arrival at the destination; the
        fault, if any, woven in."""
        declaration, fault = transit.declaration, transit.fault
        movement = declaration.movement
        assert movement is not None
        rng, config = self._rng, self.config
        tracker = f"trk-{config.origin.lower()}-{index + 1:05d}"
        departed = declaration.updated_at + timedelta(minutes=rng.randrange(2, 6))
        arrives = departed + LEG + timedelta(seconds=rng.randrange(*LEG_SPREAD_S))
        # The discharge reveals a fault; an overdue barge (stuck, its tracker silent) never
        # arrives in the run: the clock of everyone else's readings passes its deadline.
        revealed = departed if fault == "overdue" else arrives
        script: list[_Step] = []

        def emit(port: str, kind: str, device: str, body: dict[str, Any], at: datetime) -> None:
            truth = (declaration.container_no, FAULTS[fault][0]) if fault and at == revealed \
                and kind != "container" else None
            script.append(_Step(at, index, port, kind, device,
                                {"container_no": declaration.container_no, **body}, truth))

        def gate(port: str, event: str, at: datetime, *, plate: str | None = None,
                 load_kg: float | None = None) -> None:
            weighed = {} if load_kg is None else {"load_kg": round(load_kg, 1)}
            emit(port, "gate", f"gate-{port.lower()}-{index % 2 + 1:02d}", {
                "event": event, "lane": index % 6 + 1, "seal_id": movement.seals[0],
                "truck_plate": plate or f"YUE B{rng.randrange(10**5):05d}", **weighed}, at)

        def carried(port: str, at: datetime, load_kg: float) -> None:
            """Departure or arrival as the mode sees it: a quay crane's lift, a gate."""
            if movement.mode == "barge":
                emit(port, "crane", f"bqc-{port.lower()}-{index % 4 + 1:02d}", {
                    "event": "lift_end", "load_kg": round(load_kg, 1),
                    "vessel_imo": movement.carrier_imo}, at)
            else:
                gate(port, "gate_out" if port == config.origin else "gate_in", at,
                     plate=movement.carrier_plate, load_kg=load_kg)

        def fix(at: datetime, port: str, lat: float, lon: float, **changes: Any) -> None:
            emit(port, "container", tracker, {
                "lat": round(lat, 6), "lon": round(lon, 6), "door": "closed",
                "seal_id": movement.seals[0], "seal_state": "intact",
                "battery_pct": round(rng.uniform(40, 100), 1), **changes}, at)

        lift_mass = declaration.gross_mass_kg * (1.25 if fault == "mass_mismatch" else
                                                  1 + rng.gauss(0, 0.004))
        # Trucked in to the origin's gate before its release (DCSA GTIN) ...
        gate(config.origin, "gate_in", declaration.updated_at - timedelta(
            minutes=rng.randrange(10, 60)))
        route = RIVER if movement.mode == "barge" else ROAD
        fix(departed - timedelta(minutes=1), config.origin, *route[0])
        carried(config.origin, departed, declaration.gross_mass_kg)
        if fault == "overdue":
            return sorted(script, key=lambda step: step.at)
        steps = int((arrives - departed) / FIX_EVERY)
        silent = range(steps // 3, steps // 3 + 6) if fault == "tracker_silent" else range(0)
        for step in range(1, steps):
            if step in silent:
                continue
            lat, lon = along(route, step / steps)
            changes: dict[str, Any] = {}
            if fault == "door_opened" and step == steps // 2:
                changes["door"] = "open"
            if fault == "corridor_deviation" and step in (steps // 2, steps // 2 + 1):
                lat += 0.05  # ~5.5 km north of the river or the road
            fix(departed + step * FIX_EVERY, config.origin, lat, lon, **changes)
        seal = f"SL{rng.randrange(10**7):07d}" if fault == "seal_swapped" else movement.seals[0]
        fix(arrives - timedelta(seconds=30), config.destination, *route[-1], seal_id=seal)
        carried(config.destination, arrives, lift_mass)
        for later in range(1, AFTERWARDS + 1):  # in the yard: seals are no longer reported
            emit(config.destination, "container", tracker, {
                "lat": RIVER[-1][0], "lon": RIVER[-1][1], "door": "closed",
                "battery_pct": round(rng.uniform(40, 100), 1)},
                 arrives + later * timedelta(minutes=5))
        if index % TRUCKED_OUT == 0:  # ... and some leave the destination by truck (GTOT)
            gate(config.destination, "gate_out", arrives + (AFTERWARDS + 1) * timedelta(minutes=5))
        return sorted(script, key=lambda step: step.at)


def along(waypoints: Sequence[tuple[float, float]], fraction: float) -> tuple[float, float]:
    """The point ``fraction`` of the way along ``waypoints`` (lat, lon), by index."""
    position = fraction * (len(waypoints) - 1)
    index = min(int(position), len(waypoints) - 2)
    (lat1, lon1), (lat2, lon2) = waypoints[index], waypoints[index + 1]
    part = position - index
    return lat1 + (lat2 - lat1) * part, lon1 + (lon2 - lon1) * part
