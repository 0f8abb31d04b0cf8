"""A simulated container terminal: containers, declarations, quay cranes, RTGs and trackers.

Pure and reproducible: ``Fleet(config).messages()`` yields the same MQTT messages for the same
seed and start time. Anomalies are injected at most once per (container, rule) and reported as
ground truth; normal traffic never breaks a rule (held boxes are never lifted, doors stay
closed, loads match the declared mass within 1 %).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Declaration, DeclarationStatus, Rule, encode, iso6346
from schemas.declaration import RELEASED_STATUSES, ReeferRange
from schemas.topics import mqtt_telemetry_topic

YARD_BLOCKS = ("A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4")
TERMINAL_LAT, TERMINAL_LON = 22.4800, 113.9000  # Shekou container terminal, roughly
# Event-time span of injected reefer excursions and undeclared-container sightings: longer than
# the streams' default grace periods, so each injected anomaly must raise exactly one alert.
ANOMALY_SPAN = timedelta(minutes=15)
# Event time starts this far behind the wall clock and must stay behind it: gateways reject
# readings stamped more than a few minutes ahead. An anomaly burst reaches ANOMALY_SPAN ahead of
# the fleet's clock, and a run publishing at a rate advances that clock no faster than the wall
# clock when its step is ``step_for_rate(rate)``.
EVENT_TIME_LAG = timedelta(hours=1)
DEFAULT_STEP = timedelta(milliseconds=100)
# The terminal the simulator models (Shekou); `stack up` makes its edge gateway's MQTT user.
HOME_PORT = "CNSHK"


def step_for_rate(rate: float) -> timedelta:
    """Event time between two messages published at ``rate`` per second (0 = as fast as
    possible: the default step, fine for runs of up to ~25,000 messages)."""
    return timedelta(seconds=1 / rate) if rate > 0 else DEFAULT_STEP
ANOMALY_STEPS = 4
WEIGHT_ERROR = 0.25  # injected weight mismatches are 25 % off (always > 5 % and > 500 kg)
INVALID_KINDS = ("not_json", "schema", "bad_container", "spoofed_topic", "oversized")
_STATUS_WEIGHTS = {
    DeclarationStatus.RELEASED: 50, DeclarationStatus.CLEARED: 20, DeclarationStatus.LODGED: 15,
    DeclarationStatus.UNDER_REVIEW: 10, DeclarationStatus.HELD: 5,
}
_REEFER_RANGES = ((-20.0, -16.0), (2.0, 8.0), (-1.0, 1.0))
_OWNERS = ("CSQ", "MSK", "COS", "OOL", "EMC", "HLX", "CMA", "TGH")


@dataclass(frozen=True)
class FleetConfig:
    devices: int = 50
    seed: int = 1
    anomaly_rate: float = 0.0
    invalid_rate: float = 0.0
    # Chance that a device restarts (reboot, battery swap) before a reading: its seq starts
    # again at 1; cranes and RTGs also step their boot counter (Sparkplug's bdSeq), trackers
    # send none, so both kinds of identity are exercised.
    reboot_rate: float = 0.0
    port: str = HOME_PORT
    start: datetime = field(default_factory=lambda: (
        datetime.now(UTC) - EVENT_TIME_LAG).replace(microsecond=0))
    step: timedelta = DEFAULT_STEP  # event time between two messages
    max_payload_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.devices < 3:
            raise ValueError(f"a fleet needs at least 3 devices (a crane, an RTG, a tracker), "
                             f"got {self.devices}")
        for name in ("anomaly_rate", "invalid_rate", "reboot_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class SimMessage:
    topic: str
    payload: bytes
    device_id: str
    seq: int | None  # None for invalid messages, which do not use a sequence number
    invalid_kind: str | None = None
    truth: tuple[str, Rule] | None = None  # (container_no, rule) for the first message of one
    # False inside a multi-message anomaly: a run bounded by time stops only where this is True,
    # so every anomaly in the ground truth was published whole.
    ends_scenario: bool = True
    restarted: bool = False  # the device restarted just before: its seq started again at 1

    @property
    def valid(self) -> bool:
        return self.invalid_kind is None


@dataclass
class _Device:
    device_id: str
    kind: str
    seq: int = 0
    boot: int | None = None  # None: a device that sends no boot counter
    last_ts: datetime | None = None


@dataclass
class _Box:
    number: str
    declaration: Declaration | None
    tracker: _Device


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._clock = config.start
        cranes = max(1, config.devices // 25)
        rtgs = max(1, config.devices // 12)
        trackers = config.devices - cranes - rtgs
        self._vessels = [self._imo() for _ in range(3)]
        self._cranes = [_Device(f"qc-{i:02d}", "crane", boot=0) for i in range(1, cranes + 1)]
        self._rtgs = [_Device(f"rtg-{i:02d}", "rtg", boot=0) for i in range(1, rtgs + 1)]
        self._numbers: set[str] = set()
        self._boxes = [self._box(i) for i in range(trackers)]
        # What cranes and RTGs move: declared and not held (declarations never change here;
        # found once, not per message: with 2,000 boxes that search was 0.6 ms a message).
        self._movable = [b for b in self._boxes
                         if b.declaration and b.declaration.status != DeclarationStatus.HELD]
        self._undeclared = 0
        self._injected: set[tuple[str, Rule]] = set()

    # -- the terminal ------------------------------------------------------------------------

    @property
    def declarations(self) -> list[Declaration]:
        return [box.declaration for box in self._boxes if box.declaration is not None]

    def _imo(self) -> str:
        digits = "".join(self._rng.choice(string.digits[1:]) for _ in range(6))
        check = sum(int(d) * w for d, w in zip(digits, range(7, 1, -1), strict=True)) % 10
        return f"{digits}{check}"

    def _container_number(self) -> str:
        while True:
            number = iso6346.with_check_digit(
                f"{self._rng.choice(_OWNERS)}U{self._rng.randrange(10**6):06d}"
            )
            if number not in self._numbers:
                self._numbers.add(number)
                return number

    def _box(self, index: int) -> _Box:
        number = self._container_number()
        rng = self._rng
        status = rng.choices(list(_STATUS_WEIGHTS), weights=list(_STATUS_WEIGHTS.values()))[0]
        low, high = rng.choice(_REEFER_RANGES)
        reefer = ReeferRange(min_c=low, max_c=high) if rng.random() < 0.25 else None
        declaration = Declaration(
            declaration_id=f"{self.config.port}-DEC-{index + 1:06d}",
            container_no=number,
            status=status,
            gross_mass_kg=float(rng.randrange(5_000, 30_000)),
            seal_numbers=(f"SL{rng.randrange(10**7):07d}",),
            hs_codes=(rng.choice(("850440", "940360", "030389", "870899", "610910")),),
            reefer=reefer,
            vessel_imo=rng.choice(self._vessels),
            voyage=f"{rng.randrange(1, 99):03d}E",
            port_of_loading=self.config.port,
            port_of_discharge=rng.choice(("NLRTM", "DEHAM", "SGSIN", "USLAX")),
            allowed_yard_blocks=tuple(sorted(rng.sample(YARD_BLOCKS, 2))),
            version=1,
            updated_at=self.config.start - timedelta(hours=1),
        )
        return _Box(number, declaration, _Device(f"trk-{index + 1:05d}", "container"))

    # -- messages ----------------------------------------------------------------------------

    def messages(self) -> Iterator[SimMessage]:
        """An endless stream of messages; bound it with itertools.islice or a deadline."""
        rng = self._rng
        while True:
            self._clock += self.config.step
            roll = rng.random()
            if roll < self.config.invalid_rate:
                yield self._invalid()
            elif roll < self.config.invalid_rate + self.config.anomaly_rate:
                scenario = self._anomaly()
                yield from scenario if scenario else [self._normal()]
            else:
                yield self._normal()

    def _emit(self, device: _Device, body: dict[str, Any], at: datetime | None = None,
              truth: tuple[str, Rule] | None = None, ends_scenario: bool = True) -> SimMessage:
        # Event time never goes backwards for one device, even after a future-dated burst.
        ts = at or self._clock
        if device.last_ts is not None and ts <= device.last_ts:
            ts = device.last_ts + timedelta(milliseconds=1)
        device.last_ts = ts
        restarted = bool(self.config.reboot_rate) and self._rng.random() < self.config.reboot_rate
        if restarted:
            self._reboot(device)
        device.seq += 1
        reading = {"kind": device.kind, "device_id": device.device_id, "seq": device.seq,
                   "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                   "port": self.config.port, **body}
        if device.boot is not None:
            reading["boot"] = device.boot
        return SimMessage(
            mqtt_telemetry_topic(self.config.port, device.kind, device.device_id),
            encode(reading), device.device_id, device.seq, truth=truth,
            ends_scenario=ends_scenario, restarted=restarted,
        )

    @staticmethod
    def _reboot(device: _Device) -> None:
        device.seq = 0
        if device.boot is not None:
            device.boot += 1

    def _normal(self) -> SimMessage:
        rng = self._rng
        roll = rng.random()
        movable = self._movable
        if roll < 0.15 and movable:
            return self._emit(rng.choice(self._cranes), self._crane_body(rng.choice(movable)))
        if roll < 0.35 and movable:
            return self._emit(rng.choice(self._rtgs), self._rtg_body(rng.choice(movable)))
        box = rng.choice(self._boxes)
        return self._emit(box.tracker, self._tracker_body(box))

    def _tracker_body(self, box: _Box, **overrides: Any) -> dict[str, Any]:
        rng = self._rng
        body: dict[str, Any] = {
            "container_no": box.number,
            "lat": round(TERMINAL_LAT + rng.uniform(-0.01, 0.01), 6),
            "lon": round(TERMINAL_LON + rng.uniform(-0.02, 0.02), 6),
            "door": "closed",
            "seal_state": "intact",
            "battery_pct": round(rng.uniform(20, 100), 1),
            "shock_g": round(rng.uniform(0, 0.5), 2),
        }
        declaration = box.declaration
        if declaration is not None:
            body["seal_id"] = declaration.seal_numbers[0]
            if declaration.reefer is not None:
                low, high = declaration.reefer.min_c, declaration.reefer.max_c
                body["reefer_temp_c"] = round(rng.uniform(low + 0.3, high - 0.3), 2)
                body["reefer_setpoint_c"] = round((low + high) / 2, 1)
                body["humidity_pct"] = round(rng.uniform(60, 90), 1)
        body.update(overrides)
        return body

    def _crane_body(self, box: _Box, **overrides: Any) -> dict[str, Any]:
        assert box.declaration is not None
        rng = self._rng
        body = {
            "event": rng.choice(("lift_start", "lift_end")),
            "container_no": box.number,
            "load_kg": round(box.declaration.gross_mass_kg * (1 + rng.gauss(0, 0.005)), 1),
            "vessel_imo": box.declaration.vessel_imo,
            "bay": rng.randrange(1, 80), "row": rng.randrange(0, 20), "tier": rng.randrange(2, 90),
            "wind_speed_ms": round(rng.uniform(0, 15), 1),
        }
        body.update(overrides)
        return body

    def _rtg_body(self, box: _Box, **overrides: Any) -> dict[str, Any]:
        assert box.declaration is not None
        rng = self._rng
        body = {
            "event": rng.choice(("pick", "drop", "move")),
            "container_no": box.number,
            "load_kg": round(box.declaration.gross_mass_kg * (1 + rng.gauss(0, 0.005)), 1),
            "yard_block": rng.choice(box.declaration.allowed_yard_blocks or YARD_BLOCKS),
            "bay": rng.randrange(1, 40), "row": rng.randrange(0, 7), "tier": rng.randrange(1, 6),
        }
        body.update(overrides)
        return body

    # -- anomalies ---------------------------------------------------------------------------

    def _anomaly(self) -> list[SimMessage] | None:
        scenarios: dict[Rule, Callable[[_Box, tuple[str, Rule]], list[SimMessage]]] = {
            Rule.WEIGHT_MISMATCH: self._weight_mismatch,
            Rule.SEAL_BROKEN: lambda box, truth: [self._emit(
                box.tracker, self._tracker_body(box, seal_state="broken"), truth=truth)],
            Rule.DOOR_OPENED: lambda box, truth: [self._emit(
                box.tracker, self._tracker_body(box, door="open"), truth=truth)],
            Rule.REEFER_EXCURSION: self._reefer_excursion,
            Rule.HOLD_VIOLATION: lambda box, truth: [self._emit(
                self._rng.choice(self._cranes), self._crane_body(box, event="lift_start"),
                truth=truth)],
            Rule.VESSEL_MISMATCH: self._vessel_mismatch,
            Rule.ZONE_VIOLATION: self._zone_violation,
        }
        rule = self._rng.choice([*scenarios, Rule.UNDECLARED_CONTAINER])
        if rule is Rule.UNDECLARED_CONTAINER:
            return self._undeclared_container()
        candidates = [b for b in self._boxes if self._eligible(b, rule)]
        if not candidates:
            return None
        box = self._rng.choice(candidates)
        truth = (box.number, rule)
        self._injected.add(truth)
        return scenarios[rule](box, truth)

    def _eligible(self, box: _Box, rule: Rule) -> bool:
        declaration = box.declaration
        if declaration is None or (box.number, rule) in self._injected:
            return False
        held = declaration.status == DeclarationStatus.HELD
        if rule is Rule.DOOR_OPENED:
            return declaration.status not in RELEASED_STATUSES
        if rule is Rule.REEFER_EXCURSION:
            return declaration.reefer is not None
        if rule is Rule.HOLD_VIOLATION:
            return held
        if rule is Rule.ZONE_VIOLATION:
            return not held and bool(declaration.allowed_yard_blocks)
        if rule in (Rule.WEIGHT_MISMATCH, Rule.VESSEL_MISMATCH):
            return not held
        return True

    def _weight_mismatch(self, box: _Box, truth: tuple[str, Rule]) -> list[SimMessage]:
        assert box.declaration is not None
        load = round(box.declaration.gross_mass_kg * (1 + WEIGHT_ERROR), 1)
        crane = self._rng.choice(self._cranes)
        return [self._emit(crane, self._crane_body(box, event="lift_start", load_kg=load),
                           truth=truth)]

    def _vessel_mismatch(self, box: _Box, truth: tuple[str, Rule]) -> list[SimMessage]:
        assert box.declaration is not None
        other = next(v for v in self._vessels if v != box.declaration.vessel_imo)
        crane = self._rng.choice(self._cranes)
        return [self._emit(crane, self._crane_body(box, event="lift_end", vessel_imo=other),
                           truth=truth)]

    def _zone_violation(self, box: _Box, truth: tuple[str, Rule]) -> list[SimMessage]:
        assert box.declaration is not None
        allowed = box.declaration.allowed_yard_blocks or ()
        block = self._rng.choice([b for b in YARD_BLOCKS if b not in allowed])
        rtg = self._rng.choice(self._rtgs)
        return [self._emit(rtg, self._rtg_body(box, event="drop", yard_block=block), truth=truth)]

    def _burst(self, box: _Box, truth: tuple[str, Rule], **overrides: Any) -> list[SimMessage]:
        """Readings of one tracker spread over ANOMALY_SPAN of event time."""
        step = ANOMALY_SPAN / (ANOMALY_STEPS - 1)
        return [
            self._emit(box.tracker, self._tracker_body(box, **overrides), at=self._clock + i * step,
                       truth=truth if i == 0 else None, ends_scenario=i == ANOMALY_STEPS - 1)
            for i in range(ANOMALY_STEPS)
        ]

    def _reefer_excursion(self, box: _Box, truth: tuple[str, Rule]) -> list[SimMessage]:
        assert box.declaration is not None
        assert box.declaration.reefer is not None
        return self._burst(box, truth, reefer_temp_c=box.declaration.reefer.max_c + 6.0)

    def _undeclared_container(self) -> list[SimMessage]:
        self._undeclared += 1
        box = _Box(self._container_number(), None,
                   _Device(f"trk-x{self._undeclared:04d}", "container"))
        truth = (box.number, Rule.UNDECLARED_CONTAINER)
        self._injected.add(truth)
        return self._burst(box, truth)

    # -- invalid input -----------------------------------------------------------------------

    def _invalid(self) -> SimMessage:
        kind = self._rng.choice(INVALID_KINDS)
        box = self._rng.choice(self._boxes)
        device = box.tracker
        topic = mqtt_telemetry_topic(self.config.port, device.kind, device.device_id)
        reading = {"kind": "container", "device_id": device.device_id, "seq": device.seq + 1,
                   "ts": self._clock.isoformat(), "port": self.config.port,
                   "container_no": box.number}
        if kind == "not_json":
            payload = b'{"kind": "container", "device_id": ' + device.device_id.encode()
        elif kind == "schema":
            payload = json.dumps({**reading, "door": "ajar", "seq": "one"}).encode()
        elif kind == "bad_container":
            wrong = (int(box.number[-1]) + 1) % 10
            payload = json.dumps({**reading, "container_no": box.number[:-1] + str(wrong)}).encode()
        elif kind == "spoofed_topic":
            victim = self._rng.choice([b for b in self._boxes if b is not box] or self._boxes)
            topic = mqtt_telemetry_topic(self.config.port, "container", victim.tracker.device_id)
            payload = json.dumps(reading).encode()
            if victim is box:  # a one-box fleet: spoof the kind instead
                topic = mqtt_telemetry_topic(self.config.port, "rtg", device.device_id)
        else:
            padding = "x" * self.config.max_payload_bytes
            payload = json.dumps({**reading, "padding": padding}).encode()
        return SimMessage(topic, payload, device.device_id, None, invalid_kind=kind)
