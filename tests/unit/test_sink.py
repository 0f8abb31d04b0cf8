"""Kafka records → ClickHouse rows, rejects, DDL per server version, the README's queries."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import clickhouse as ch
from schemas import topics
from smartport.settings import PROJECT_ROOT
from streams.analytics.rows import to_row
from streams.analytics.store import _in_ticks, _tick_of
from tests.helpers import crane_reading, declaration

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def test_rows_from_every_topic() -> None:
    envelope = json.dumps({"received_at": "2026-11-24T02:00:01Z", "gateway_id": "gw",
                           "mqtt_topic": "port/CNSHK/crane/qc-01/telemetry",
                           "reading": crane_reading()}).encode()
    table, row = to_row(topics.TELEMETRY, 3, 42, envelope, NOW)
    assert table is ch.TELEMETRY
    assert (row["device_id"], row["seq"], row["kafka_offset"]) == ("qc-01", 1, 42)
    assert row["container_no"] == "CSQU3054383"
    assert set(row) == set(ch.TELEMETRY.column_names)
    table, row = to_row(topics.DECLARATIONS, 0, 1, json.dumps(declaration()).encode(), NOW)
    assert table is ch.DECLARATIONS
    assert set(row) == set(ch.DECLARATIONS.column_names)


@pytest.mark.parametrize("value", [b"not json", b"", None, b'{"reading": {}}', b"\xff\xfe"])
def test_bad_records_become_rejects(value: bytes | None) -> None:
    table, row = to_row(topics.TELEMETRY, 1, 7, value, NOW)
    assert table is ch.REJECTS
    assert row["reason"]
    assert (row["topic"], row["kafka_offset"]) == (topics.TELEMETRY, 7)


def test_ddl_adapts_to_the_server_version() -> None:
    legacy = "\n".join(ch.ddl(ch.Dialect.for_version("18.16.1"), ttl_days=30))
    modern = "\n".join(ch.ddl(ch.Dialect.for_version("24.8.1"), ttl_days=30))
    for feature in ("DateTime64(3, 'UTC')", "LowCardinality", "CODEC", "TTL"):
        assert feature in modern
        assert feature not in legacy
    for name in [t.name for t in ch.TABLES] + list(ch.VIEWS):
        assert name in legacy


def test_readings_are_identified_by_their_id_and_partitioned_by_our_clock() -> None:
    telemetry = ch.create_table(ch.TELEMETRY, ch.Dialect(modern=True), ttl_days=30)
    assert "ORDER BY (device_id, boot, seq, reading_id)" in telemetry
    assert "PARTITION BY toYYYYMM(`received_at`)" in telemetry  # not the device's ts
    assert "TTL toDateTime(`received_at`)" in telemetry
    for table in (ch.ALERTS, ch.DECLARATIONS):  # event time, so by month: few partitions
        assert "PARTITION BY toYYYYMM(" in ch.create_table(table, ch.Dialect(modern=True), None)


def test_a_restated_linked_port_record_keeps_the_latest() -> None:
    for table in (ch.MOVEMENTS, ch.CERTIFICATES, ch.CLEARANCE, ch.PORT_EVENTS):
        ddl = ch.create_table(table, ch.Dialect.for_version("18.16.1"), None)
        assert "ENGINE = ReplacingMergeTree(`kafka_offset`)" in ddl
    assert "ENGINE = ReplacingMergeTree\n" in ch.create_table(ch.TELEMETRY, ch.Dialect(True), None)


def test_a_table_keys_the_sink_buffers_as_its_equals_do() -> None:
    """Table's hash is its name's (cheap per row); it must agree with dataclass equality."""
    buffers = {ch.TELEMETRY: "telemetry rows", ch.INTAKE: "intake records"}
    assert buffers[dataclasses.replace(ch.TELEMETRY)] == "telemetry rows"
    assert dataclasses.replace(ch.TELEMETRY, name="other") not in buffers
    assert len({ch.TELEMETRY, ch.INTAKE, ch.REJECTS, ch.TELEMETRY}) == 3


def test_readme_lists_every_analyst_query() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name, sql in ch.ANALYST_QUERIES.items():
        assert name in readme
        assert sql in readme.replace("\n", " "), name


@pytest.mark.parametrize(("column_type", "when", "stored"), [
    ("DateTime", "2026-03-01T14:34:56.999+02:00", 1772368496),
    ("DateTime('UTC')", "1970-01-01T00:00:00Z", 0),
    ("DateTime64(3, 'UTC')", "2026-03-01T12:34:56.7899Z", 1772368496789),
    ("DateTime64(6)", "2026-03-01T12:34:56.000001Z", 1772368496000001),
    ("DateTime64(0)", "1969-12-31T23:59:59.5Z", -1),  # floored, not truncated toward 0
])
def test_the_server_store_sends_a_time_as_the_integer_its_column_holds(
        column_type: str, when: str, stored: int) -> None:
    tick = _tick_of(column_type)
    assert tick is not None
    assert _in_ticks(datetime.fromisoformat(when), tick) == stored


def test_times_the_server_store_cannot_send_exactly_are_left_to_clickhouse_driver() -> None:
    assert _tick_of("DateTime64(9, 'UTC')") is None  # beyond a datetime's microseconds
    assert _tick_of("Nullable(DateTime)") is None
    assert _tick_of("String") is None
    naive = datetime(2026, 3, 1, 12)  # in the server's zone: the driver knows which
    assert _in_ticks(naive, timedelta(seconds=1)) is naive
    assert _in_ticks(None, timedelta(seconds=1)) is None
