"""Per-container state kept between readings (in a changelog-backed table): deduplication,
event-time clocks of the duration rules, and the open alert of each rule."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, model_validator

from schemas import Evidence, Rule
from streams.transit.state import TransitState

RECENT_PER_DEVICE = 512  # reading ids kept per device: redeliveries arrive close to the original
# A reading id's first 64 bits: two of a device's last 512 readings collide with odds of 1 in
# 10^14, and a forger would have to guess a genuine reading before it is sent.
ID_PREFIX_BYTES = 8
EVIDENCE_KEPT = 10
# Readings of a container the worker has no declaration for yet, judged against it when it
# comes (declarations and telemetry are two topics, read by two agents): the earliest, which
# hold a movement's departure. Bounded: an undeclared container is written per reading.
EARLY_KEPT = 64


def _from_base64(window: Any) -> Any:
    if not isinstance(window, str):
        return window
    kept = base64.b64decode(window, validate=True)
    if len(kept) % ID_PREFIX_BYTES:  # a garbled window would shift every later match
        raise ValueError(f"a window of whole {ID_PREFIX_BYTES}-byte prefixes, not {len(kept)} "
                         "bytes")
    return kept


# A device's last reading ids (arrival order), their prefixes end to end: bytes in memory,
# searched and extended at every reading; written as one base64 string, a third of the bytes
# of a JSON list of the ids and far cheaper to write and parse at each commit.
IdWindow = Annotated[bytes, BeforeValidator(_from_base64), PlainSerializer(
    lambda window: base64.b64encode(window).decode("ascii"), return_type=str)]


class EarlyReading(BaseModel):
    """A reading that came before its container's declaration (its canonical JSON)."""

    reading: str
    evidence: Evidence


class OpenAlert(BaseModel):
    alert_id: str
    first_seen: datetime
    last_seen: datetime
    count: int
    version: int
    worst: float | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    raised_by: str | None = None  # reading id of the raising reading: names the incident
    acknowledged_by: str | None = None


class ContainerState(BaseModel):
    recent: dict[str, IdWindow] = Field(default_factory=dict)
    declaration_version: int | None = None
    reefer_out_since: datetime | None = None
    reefer_last_out: datetime | None = None
    reefer_last_ok: datetime | None = None
    undeclared_since: datetime | None = None
    undeclared_last: datetime | None = None
    alerts: dict[Rule, OpenAlert] = Field(default_factory=dict)
    incidents: dict[Rule, int] = Field(default_factory=dict)
    transit: TransitState | None = None  # its declared movement between linked ports
    # The latest (event time) door state and geofence its tracker reported, for IoT events.
    door: str | None = None
    door_at: datetime | None = None
    fence: str | None = None  # a geofence's port, or "" outside every one
    fence_at: datetime | None = None
    early: list[EarlyReading] = Field(default_factory=list)  # before any declaration
    early_dropped: int = 0  # ... beyond EARLY_KEPT: not judged (logged when it is declared)

    def keep_early(self, reading: str, evidence: Evidence) -> None:
        if len(self.early) < EARLY_KEPT:
            self.early.append(EarlyReading(reading=reading, evidence=evidence))
        else:
            self.early_dropped += 1

    @model_validator(mode="before")
    @classmethod
    def _ids_written_as_lists(cls, data: Any) -> Any:
        """A state written before the prefixes keeps its window: ``recent_ids`` (lists of
        reading ids) become ``recent``."""
        if isinstance(data, dict) and isinstance(data.get("recent_ids"), dict):
            data = dict(data)
            data.setdefault("recent", {device: _window(bytes.fromhex(i[:2 * ID_PREFIX_BYTES])
                                                       for i in ids)
                                       for device, ids in data.pop("recent_ids").items()})
        return data

    def first_time(self, device_id: str, reading_id: str) -> bool:
        """Record a reading's id (32 hex digits); False when it was already processed (a
        redelivery). A seq that restarts after a reboot is a new reading: its id differs."""
        prefix = bytes.fromhex(reading_id[:2 * ID_PREFIX_BYTES])
        kept = self.recent.get(device_id, b"")
        at = kept.find(prefix)
        while at != -1:
            if at % ID_PREFIX_BYTES == 0:
                return False
            at = kept.find(prefix, at + 1)  # a match across two prefixes is not one
        # The oldest go first: arrival order, not seq order, which restarts.
        self.recent[device_id] = _window([kept, prefix])
        return True

    def note_reefer(self, ts: datetime, out_of_range: bool) -> float:
        """Seconds (event time) the current excursion has lasted; 0 when in range."""
        if out_of_range:
            starts_earlier = self.reefer_out_since is None or ts < self.reefer_out_since
            after_last_ok = self.reefer_last_ok is None or ts > self.reefer_last_ok
            if starts_earlier and after_last_ok:
                self.reefer_out_since = ts
            if self.reefer_last_out is None or ts > self.reefer_last_out:
                self.reefer_last_out = ts
            return (self.reefer_last_out - (self.reefer_out_since or ts)).total_seconds()
        if self.reefer_last_out is not None and ts > self.reefer_last_out:
            self.reefer_out_since = self.reefer_last_out = None  # back in range: it ended
        if self.reefer_last_ok is None or ts > self.reefer_last_ok:
            self.reefer_last_ok = ts
        return 0.0

    def note_undeclared(self, ts: datetime) -> float:
        """Seconds (event time) readings have arrived without a declaration."""
        if self.undeclared_since is None or ts < self.undeclared_since:
            self.undeclared_since = ts
        if self.undeclared_last is None or ts > self.undeclared_last:
            self.undeclared_last = ts
        return (self.undeclared_last - self.undeclared_since).total_seconds()


def _window(prefixes: Iterable[bytes]) -> bytes:
    """The last RECENT_PER_DEVICE prefixes of ``prefixes``."""
    return b"".join(prefixes)[-RECENT_PER_DEVICE * ID_PREFIX_BYTES:]
