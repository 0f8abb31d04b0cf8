"""Rule thresholds and severities, with documented defaults; overridable from a TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import Rule, Severity
from smartport.errors import ConfigError

DEFAULT_SEVERITIES: dict[Rule, Severity] = {
    Rule.WEIGHT_MISMATCH: Severity.WARNING,
    Rule.SEAL_BROKEN: Severity.CRITICAL,
    Rule.DOOR_OPENED: Severity.CRITICAL,
    Rule.REEFER_EXCURSION: Severity.WARNING,
    Rule.UNDECLARED_CONTAINER: Severity.WARNING,
    Rule.HOLD_VIOLATION: Severity.CRITICAL,
    Rule.VESSEL_MISMATCH: Severity.CRITICAL,
    Rule.ZONE_VIOLATION: Severity.WARNING,
    Rule.TRANSIT_DISCREPANCY: Severity.CRITICAL,
    Rule.TRANSIT_OVERDUE: Severity.CRITICAL,
}


class Geofence(BaseModel):
    """A port's area, a circle: a container's tracker entering or leaving it is an IoT event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float = Field(gt=0, le=100_000)


# Shekou's and Shunde's container terminals, roughly (the simulator's ports).
DEFAULT_GEOFENCES = {"CNSHK": Geofence(lat=22.4800, lon=113.9000, radius_m=3000),
                     "CNSUD": Geofence(lat=22.8040, lon=113.2930, radius_m=3000)}


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weight_tolerance_ratio: float = Field(
        0.05, gt=0, description="weight_mismatch: relative tolerance (UK SOLAS VGM: 5 %)")
    weight_tolerance_kg: float = Field(
        500.0, ge=0, description="weight_mismatch: absolute tolerance; the larger one applies")
    reefer_grace_s: float = Field(
        300.0, ge=0, description="reefer_excursion: out of range for at least this long")
    undeclared_grace_s: float = Field(
        600.0, ge=0, description="undeclared_container: no declaration for this long")
    transit_settle_s: float = Field(
        10.0, ge=0, description="linked ports: wall-clock seconds an arrival waits for late "
        "evidence (two ports, two MQTT sessions) before its checks run")
    geofences: dict[str, Geofence] = Field(
        default_factory=lambda: dict(DEFAULT_GEOFENCES), description="IoT geofence entry and "
        "exit events: each port's area by its UN/LOCODE")
    severities: dict[Rule, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITIES))

    def severity(self, rule: Rule) -> Severity:
        return self.severities.get(rule, DEFAULT_SEVERITIES[rule])


def load_thresholds(path: Path | None) -> Thresholds:
    """Defaults, overridden by ``path`` (TOML with the field names above) when given."""
    if path is None:
        return Thresholds()
    try:
        values = tomllib.loads(path.read_text())
        return Thresholds(**values)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None
