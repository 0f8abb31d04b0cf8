"""Shared test helpers: known-answer vectors, sample messages, ledger tampering."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from anchoring import batches
from schemas import AnchorManifest, RejectReason

VECTORS = Path(__file__).with_name("vectors")


def load_vectors(file: str, table: str) -> list[tuple[str, dict[str, Any]]]:
    """(case name, case) pairs of one table in tests/vectors/<file>, for pytest.parametrize."""
    cases = json.loads((VECTORS / file).read_text())[table]
    return sorted(cases.items())


def crane_reading(**overrides: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "kind": "crane",
        "device_id": "qc-01",
        "seq": 1,
        "ts": "2026-11-24T10:00:00+08:00",
        "port": "CNSHK",
        "event": "lift_start",
        "container_no": "CSQU3054383",
        "load_kg": 21_500.0,
        "vessel_imo": "9074729",
        "bay": 12,
        "row": 4,
        "tier": 82,
        "wind_speed_ms": 7.5,
    }
    reading.update(overrides)
    return reading


def container_reading(**overrides: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "kind": "container",
        "device_id": "tracker-CSQU3054383",
        "seq": 7,
        "ts": "2026-11-24T02:00:00Z",
        "port": "CNSHK",
        "container_no": "CSQU3054383",
        "lat": 22.48,
        "lon": 113.91,
        "door": "closed",
        "seal_id": "SL123456",
        "seal_state": "intact",
        "reefer_temp_c": -18.2,
        "reefer_setpoint_c": -18.0,
        "humidity_pct": 71.0,
        "shock_g": 0.3,
        "battery_pct": 88.0,
    }
    reading.update(overrides)
    return reading


def rtg_reading(**overrides: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "kind": "rtg",
        "device_id": "rtg-07",
        "seq": 3,
        "ts": "2026-11-24T02:01:00Z",
        "port": "CNSHK",
        "event": "pick",
        "container_no": "BICU1234565",
        "load_kg": 18_000.0,
        "yard_block": "B3",
        "bay": 20,
        "row": 2,
        "tier": 3,
    }
    reading.update(overrides)
    return reading


def declaration(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "declaration_id": "CNSHK-2026-000001",
        "container_no": "CSQU3054383",
        "status": "lodged",
        "gross_mass_kg": 21_000.0,
        "seal_numbers": ["SL123456"],
        "hs_codes": ["850440"],
        "reefer": {"min_c": -20.0, "max_c": -16.0},
        "vessel_imo": "9074729",
        "voyage": "024E",
        "port_of_loading": "CNSHK",
        "port_of_discharge": "NLRTM",
        "allowed_yard_blocks": ["B3", "B4"],
        "version": 1,
        "updated_at": "2026-11-24T01:00:00Z",
    }
    value.update(overrides)
    return value


def rewrite_ledger(directory: Path, change: Callable[[list[str]], list[str]]) -> None:
    """Rewrite a file ledger's entries (one JSON line each) as ``change`` says: tampering."""
    path = directory / "ledger.jsonl"
    path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")


def edit_second_root(lines: list[str]) -> list[str]:
    entry = json.loads(lines[1])
    entry["root"] = "00" * 32
    return [lines[0], json.dumps(entry), *lines[2:]]


def _crane(**overrides: Any) -> bytes:
    return json.dumps(crane_reading(**overrides)).encode()


def _crane_with_raw(field: str, raw: bytes) -> bytes:
    """A crane reading whose ``field`` is written as ``raw`` JSON text."""
    rest = json.dumps({k: v for k, v in crane_reading().items() if k != field}).encode()
    return rest[:-1] + b', "' + field.encode() + b'": ' + raw + b"}"


def hostile_payloads(now: datetime) -> dict[str, tuple[bytes, RejectReason, str]]:
    """Adversarial payloads for device qc-01 (topic port/CNSHK/crane/qc-01/telemetry), each
    with the reason and a piece of the detail the gateway must reject it with, given that its
    clock reads ``now`` and it runs with the default limits."""
    future = (now + timedelta(minutes=11)).replace(microsecond=0)
    return {
        "deep-arrays": (b"[" * 20_000, RejectReason.NOT_JSON, "nested"),
        "deep-objects": (b'{"a":' * 12_000, RejectReason.NOT_JSON, "nested"),
        "deep-but-balanced": (b"[" * 5_000 + b"]" * 5_000, RejectReason.NOT_JSON, "nested"),
        "thousands-of-digits": (_crane_with_raw("tier", b"9" * 5_000), RejectReason.NOT_JSON,
                                "number out of range"),
        "float-overflow": (_crane_with_raw("load_kg", b"1e999"), RejectReason.SCHEMA,
                           "load_kg"),
        "float-seq": (_crane_with_raw("seq", b"-0.0"), RejectReason.SCHEMA, "seq"),
        "raw-nul-in-a-string": (b'{"kind": "cr\x00ane"}', RejectReason.NOT_JSON,
                                "control character"),
        "escaped-nul-in-an-id": (_crane(device_id="qc-01\x00"), RejectReason.SCHEMA,
                                 "device_id"),
        "invalid-utf8-in-a-string": (b'{"kind": "crane", "device_id": "qc-\xff"}',
                                     RejectReason.NOT_UTF8, "UTF-8"),
        "year-1-with-offset": (_crane(ts="0001-01-01T00:30:00+01:00"), RejectReason.SCHEMA,
                               "ts"),
        "year-9999-with-negative-offset": (_crane(ts="9999-12-31T23:30:00-01:00"),
                                           RejectReason.SCHEMA, "ts"),
        "before-2000": (_crane(ts="1999-12-31T23:59:59Z"), RejectReason.SCHEMA,
                        "ts: 1999-12-31T23:59:59+00:00 is before 2000-01-01T00:00:00+00:00"),
        "far-future": (_crane(ts=future.isoformat()), RejectReason.SCHEMA,
                       f"ts: {future.isoformat()} is more than 600 s ahead"),
        "duplicate-device-id": (_crane()[:-1] + b', "device_id": "qc-01"}', RejectReason.SCHEMA,
                                "duplicate key 'device_id'"),
        "duplicate-seq": (_crane()[:-1] + b', "seq": 2}', RejectReason.SCHEMA,
                          "duplicate key 'seq'"),
        "duplicate-seq-blank-before-colon": (_crane()[:-1] + b', "seq"\n : 2}',
                                             RejectReason.SCHEMA, "duplicate key 'seq'"),
        "duplicate-seq-escaped-name": (_crane()[:-1] + b', "s\\u0065q": 2}', RejectReason.SCHEMA,
                                       "duplicate key 'seq'"),
        "one-byte-over-the-limit": (_crane()[:-1] + b', "pad": "'
                                    + b"x" * (65_537 - len(_crane()) - 10) + b'"}',
                                    RejectReason.OVERSIZED, "the limit is 65536"),
        "just-under-the-broker-packet-limit": (b"x" * 1_048_000, RejectReason.OVERSIZED,
                                               "payload is 1048000 bytes"),
    }


def batch_manifest(topic: str, partition: int, records: Sequence[tuple[int, bytes]],
                   timestamp_ms: int, prev_manifest_hash: str | None = None) -> AnchorManifest:
    """The manifest the anchorer writes for ``records`` (offset, value), in offset order."""
    return batches.manifest(
        topic, partition, [batches.leaf(offset, value) for offset, value in records],
        first_offset=records[0][0], last_offset=records[-1][0], timestamp_ms=timestamp_ms,
        hash_alg="blake3", prev_manifest_hash=prev_manifest_hash)
