"""The analysts' ClickHouse schema: tables, views and their DDL, versioned.

Table and view names are a public interface (saved queries depend on them). The DDL adapts to
the server: modern servers (and embedded chDB) get DateTime64(3, 'UTC'), LowCardinality, codecs
and TTL; ClickHouse before 19.x (Debian bookworm ships 18.16) gets DateTime and String.
Deduplication of at-least-once redeliveries is ReplacingMergeTree on each table's identity;
query with FINAL (the views do) for exact counts. A reading's identity is its ``reading_id``
(a hash of the whole reading), so a device that restarts its seq never has readings folded.
Tables are partitioned by month of a time the pipeline controls or bounds, so one batch of
readings from many days never exceeds ClickHouse's partitions-per-insert limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA_VERSION = 4
# Tables whose layout changed in a version: migrated (renamed, recreated, copied) on upgrade.
# Version 3 only adds the linked ports' tables (movements, certificates, clearance,
# port_events), version 4 the telemetry intake (chDB): created, nothing to migrate.
CHANGED_IN: dict[int, tuple[str, ...]] = {2: ("telemetry", "alerts", "declarations"), 3: (),
                                          4: ()}
VERSION_TABLE = "smartport_schema_version"

TIME, TIME_MS = "time", "time_ms"  # column kinds that differ between server generations
LOW, TEXT = "low", "text"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # a ClickHouse type, or one of TIME, TIME_MS, LOW, TEXT


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    order_by: str
    time_column: str  # partitions (by month) and TTL
    monthly: bool = True  # daily partitions only where the time is our own clock
    # Of rows with one identity, the one with the greatest value of this column is kept (else
    # any one): the latest Kafka record, where a record can restate an earlier one's identity.
    version_column: str | None = None

    def __hash__(self) -> int:
        # The sink keys its buffers by table, once per row: the generated hash walked every
        # column (2.1 µs for telemetry's, against 0.1 by name). Equal tables have one name.
        return hash(self.name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(spec: str) -> tuple[Column, ...]:
    return tuple(Column(*item.split(":", 1)) for item in spec.split())


TELEMETRY = Table("telemetry", _cols(
    f"ts:{TIME_MS} received_at:{TIME_MS} device_id:{LOW} boot:UInt32 seq:UInt64 "
    f"reading_id:FixedString(32) kind:{LOW} port:{LOW} "
    f"container_no:{TEXT} event:{LOW} load_kg:Nullable(Float64) lat:Nullable(Float64) "
    f"lon:Nullable(Float64) reefer_temp_c:Nullable(Float64) door:{LOW} seal_state:{LOW} "
    f"yard_block:{LOW} vessel_imo:{TEXT} gateway_id:{LOW} kafka_partition:UInt16 "
    f"kafka_offset:UInt64 raw:{TEXT}"), "(device_id, boot, seq, reading_id)", "received_at")
ALERTS = Table("alerts", _cols(
    f"last_seen:{TIME_MS} first_seen:{TIME_MS} alert_id:{TEXT} version:UInt32 rule:{LOW} "
    f"severity:{LOW} state:{LOW} container_no:{TEXT} declaration_id:{TEXT} port:{LOW} "
    f"count:UInt32 measured:{TEXT} declared:{TEXT} raw:{TEXT}"),
    "(alert_id, version)", "last_seen")
DECLARATIONS = Table("declarations", _cols(
    f"updated_at:{TIME_MS} declaration_id:{TEXT} version:UInt32 container_no:{TEXT} "
    f"status:{LOW} gross_mass_kg:Float64 vessel_imo:{TEXT} voyage:{TEXT} "
    f"port_of_loading:{LOW} port_of_discharge:{LOW} raw:{TEXT}"),
    "(declaration_id, version)", "updated_at")
ANCHORS = Table("anchors", _cols(
    f"created_at:{TIME_MS} batch_id:{TEXT} topic:{LOW} partition:UInt16 first_offset:UInt64 "
    f"last_offset:UInt64 count:UInt32 root:{TEXT} hash_alg:{LOW} aggregate_root:{TEXT} "
    f"ledger_kind:{LOW} ledger_id:{TEXT} ledger_entry:{TEXT}"), "batch_id", "created_at",
    monthly=False)
DLQ = Table("dlq", _cols(
    f"received_at:{TIME_MS} gateway_id:{LOW} reason:{LOW} detail:{TEXT} mqtt_topic:{TEXT} "
    f"payload_size:UInt32 payload_b64:{TEXT} kafka_partition:UInt16 kafka_offset:UInt64"),
    "(kafka_partition, kafka_offset)", "received_at", monthly=False)
# Records the sink could not turn into rows: kept whole with the reason, never dropped.
REJECTS = Table("sink_rejects", _cols(
    f"rejected_at:{TIME} topic:{LOW} kafka_partition:UInt16 kafka_offset:UInt64 "
    f"reason:{TEXT} raw:{TEXT}"), "(topic, kafka_partition, kafka_offset)", "rejected_at",
    monthly=False)

# Linked ports: every step of a declared movement, with the failed checks named; a step repeated
# by a restarted worker folds on (container, movement, phase, time). A movement id is the
# declarant's, unique only with its container.
MOVEMENTS = Table("movements", _cols(
    f"at:{TIME_MS} movement_id:{TEXT} container_no:{TEXT} declaration_id:{TEXT} origin:{LOW} "
    f"destination:{LOW} phase:{LOW} failed_checks:Array(String) checks:{TEXT} "
    f"kafka_partition:UInt16 kafka_offset:UInt64 raw:{TEXT}"),
    "(container_no, movement_id, phase, at)", "at", version_column="kafka_offset")
# One per clean transit; kafka_partition/offset name the record `smartport receipt` proves.
CERTIFICATES = Table("certificates", _cols(
    f"arrived_at:{TIME_MS} movement_id:{TEXT} container_no:{TEXT} declaration_id:{TEXT} "
    f"declaration_version:UInt32 origin:{LOW} destination:{LOW} corridor_id:{LOW} "
    f"mode:{LOW} carrier:{TEXT} released_at:{TIME_MS} departed_at:{TIME_MS} "
    f"transit_seconds:Float64 issued_by:{LOW} kafka_partition:UInt16 kafka_offset:UInt64 "
    f"raw:{TEXT}"), "(container_no, movement_id)", "arrived_at", version_column="kafka_offset")
CLEARANCE = Table("clearance", _cols(
    f"at:{TIME_MS} container_no:{TEXT} movement_id:{TEXT} declaration_id:{TEXT} "
    f"destination:{LOW} status:{LOW} reasons:{TEXT} kafka_partition:UInt16 "
    f"kafka_offset:UInt64 raw:{TEXT}"),
    "(container_no, movement_id, status, at)", "at", version_column="kafka_offset")
PORT_EVENTS = Table("port_events", _cols(
    f"event_datetime:{TIME_MS} event_id:{TEXT} event_type:{LOW} event_type_code:{LOW} "
    f"container_no:{TEXT} "
    f"un_location:{LOW} movement_id:{TEXT} declaration_id:{TEXT} kafka_partition:UInt16 "
    f"kafka_offset:UInt64 raw:{TEXT}"),
    "event_id", "event_datetime", version_column="kafka_offset")

TABLES: tuple[Table, ...] = (TELEMETRY, ALERTS, DECLARATIONS, ANCHORS, DLQ, REJECTS,
                             MOVEMENTS, CERTIFICATES, CLEARANCE, PORT_EVENTS)
VERSIONS = Table(VERSION_TABLE, _cols("version:UInt32 applied_at:DateTime"), "version",
                 "applied_at", monthly=False)
# Where the sink writes telemetry.v1's records as they are, for ClickHouse to turn into rows
# (INTAKE_DDL): not a table of the analysts' schema, it keeps nothing (ENGINE = Null).
_READING_STRINGS = ("container_no", "event", "door", "seal_state", "yard_block", "vessel_imo")
_READING_NUMBERS = ("load_kg", "lat", "lon", "reefer_temp_c")
INTAKE = Table("telemetry_intake", _cols(
    "topic:String kafka_partition:UInt16 kafka_offset:UInt64 raw:String"), "tuple()", "")

# Views answer what a terminal asks; each is used by a README query and tested on both back-ends.
VIEWS: dict[str, str] = {
    "crane_moves_per_hour": """
        SELECT toStartOfHour(ts) AS hour, device_id AS crane, count() AS moves
        FROM telemetry FINAL
        WHERE kind = 'crane' AND event = 'lift_end'
        GROUP BY hour, crane""",
    "yard_dwell": """
        SELECT container_no, min(ts) AS first_seen, max(ts) AS last_seen,
               dateDiff('second', min(ts), max(ts)) AS dwell_seconds
        FROM telemetry FINAL
        WHERE kind = 'rtg' AND container_no != ''
        GROUP BY container_no""",
    "alerts_per_rule_per_day": """
        SELECT toDate(first_seen) AS day, rule, uniqExact(alert_id) AS alerts
        FROM alerts FINAL
        WHERE state = 'raised'
        GROUP BY day, rule""",
    "reefer_excursions": """
        SELECT alert_id, container_no, first_seen, last_seen, count, measured, declared
        FROM alerts FINAL
        WHERE rule = 'reefer_excursion'""",
    "dlq_reasons": """
        SELECT reason, count() AS messages, max(received_at) AS last_seen
        FROM dlq FINAL
        GROUP BY reason""",
}


# Ready answers for analysts: the README lists them verbatim and the tests run each one on
# both back-ends.
ANALYST_QUERIES: dict[str, str] = {
    "Readings and distinct devices per port and kind today":
        "SELECT port, kind, count() AS readings, uniqExact(device_id) AS devices "
        "FROM telemetry FINAL WHERE toDate(ts) = today() GROUP BY port, kind "
        "ORDER BY readings DESC",
    "The last 20 readings of one container":
        "SELECT ts, device_id, kind, event, load_kg, yard_block, door, seal_state "
        "FROM telemetry FINAL WHERE container_no = 'CSQU3054383' ORDER BY ts DESC LIMIT 20",
    "Quay-crane moves per hour":
        "SELECT hour, crane, moves FROM crane_moves_per_hour ORDER BY hour DESC, crane",
    "Longest yard dwell":
        "SELECT container_no, dwell_seconds FROM yard_dwell ORDER BY dwell_seconds DESC LIMIT 10",
    "Alerts per rule per day":
        "SELECT day, rule, alerts FROM alerts_per_rule_per_day ORDER BY day DESC, alerts DESC",
    "Reefer excursions":
        "SELECT container_no, first_seen, last_seen, count FROM reefer_excursions "
        "ORDER BY last_seen DESC",
    "Why input was rejected":
        "SELECT reason, messages, last_seen FROM dlq_reasons ORDER BY messages DESC",
    "Declared vs measured mass of crane lifts (kg)":
        "SELECT t.container_no, max(t.load_kg) AS measured, any(d.gross_mass_kg) AS declared "
        "FROM telemetry AS t FINAL INNER JOIN declarations AS d FINAL "
        "ON t.container_no = d.container_no WHERE t.kind = 'crane' "
        "GROUP BY t.container_no ORDER BY t.container_no LIMIT 20",
    "Anchored batches per topic":
        "SELECT topic, count() AS batches, sum(count) AS records, max(created_at) AS latest "
        "FROM anchors FINAL GROUP BY topic",
    "Transit time per corridor (certified transits)":
        "SELECT corridor_id, origin, destination, count() AS transits, "
        "round(avg(transit_seconds)) AS avg_seconds, max(transit_seconds) AS max_seconds "
        "FROM certificates FINAL GROUP BY corridor_id, origin, destination "
        "ORDER BY transits DESC",
    "Transit discrepancies by failed check":
        "SELECT failed_check, count() AS movements FROM movements FINAL "
        "ARRAY JOIN failed_checks AS failed_check WHERE phase = 'discrepancy' "
        "GROUP BY failed_check ORDER BY movements DESC",
    "Containers cleared on one declaration per day":
        "SELECT toDate(at) AS day, destination, uniqExact(container_no) AS containers "
        "FROM clearance FINAL WHERE status = 'green' GROUP BY day, destination "
        "ORDER BY day DESC, destination",
}


@dataclass(frozen=True)
class Dialect:
    """What the server supports: chDB and ClickHouse >= 20.1 are modern."""

    modern: bool

    @classmethod
    def for_version(cls, version: str) -> Dialect:
        major = int(version.split(".", 1)[0])
        return cls(modern=major >= 20)

    def type_of(self, kind: str) -> str:
        if kind == TIME:
            return "DateTime('UTC')" if self.modern else "DateTime"
        if kind == TIME_MS:
            return "DateTime64(3, 'UTC')" if self.modern else "DateTime"
        if kind == LOW:
            return "LowCardinality(String)" if self.modern else "String"
        if kind == TEXT:
            return "String CODEC(ZSTD(3))" if self.modern else "String"
        return kind


def create_table(table: Table, dialect: Dialect, ttl_days: int | None) -> str:
    partition = "toYYYYMM" if table.monthly else "toYYYYMMDD"
    version = f"(`{table.version_column}`)" if table.version_column else ""
    columns = ",\n    ".join(f"`{c.name}` {dialect.type_of(c.kind)}" for c in table.columns)
    ttl = ""
    if ttl_days and dialect.modern:
        ttl = f"\nTTL toDateTime(`{table.time_column}`) + INTERVAL {ttl_days} DAY"
    return (f"CREATE TABLE IF NOT EXISTS {table.name} (\n    {columns}\n)\n"
            f"ENGINE = ReplacingMergeTree{version}\n"
            f"PARTITION BY {partition}(`{table.time_column}`)\nORDER BY {table.order_by}{ttl}")


# The intake judges and converts each record once, into a second Null table that two views
# split: rows to telemetry, the rest to sink_rejects with the reason. A record is parsed five
# times (valid JSON?, the envelope's keys and fields, the reading's fields and raw values:
# types are judged on those, since JSONExtract turns 1.5 into 1 and true into 1). Each
# expression is named once in a subquery: ClickHouse evaluates an alias at every use. multiIf
# still evaluated them once per branch under short-circuit evaluation, which the sessions that
# run the intake's inserts turn off (streams.analytics.intake.JudgingSessions).
_READING_TYPE = ("Tuple(ts Nullable(String), device_id Nullable(String), boot Nullable(UInt32), "
                 "seq Nullable(UInt64), kind Nullable(String), port Nullable(String), "
                 + ", ".join(f"{name} Nullable(String)" for name in _READING_STRINGS)
                 + ", " + ", ".join(f"{name} Nullable(Float64)" for name in _READING_NUMBERS)
                 + ")")
_KINDS_OF_VALUE = " OR ".join((  # what each field's raw JSON value may be (null: absent)
    f"(p.1 IN {_READING_NUMBERS} AND (p.2 = 'null' OR match(p.2, '^-?[0-9]')))",
    f"(p.1 IN {_READING_STRINGS} AND (p.2 = 'null' OR startsWith(p.2, '\"')))",
    "(p.1 IN ('seq', 'boot') AND (p.2 = 'null' OR match(p.2, '^[0-9]+$')))",
    f"p.1 NOT IN {(*_READING_NUMBERS, *_READING_STRINGS, 'seq', 'boot')}"))
_PROBLEMS = [  # (condition, reason) in the order a record is judged
    ("NOT isValidJSON(raw)", "'not JSON'"),
    ("empty(pairs)", "'no reading object, or an empty one'"),
    ("length(arrayDistinct(keys)) != length(keys) OR length(arrayDistinct(pairs.1)) != "
     "length(pairs)", "'a key appears twice'"),
    ("NOT match(ifNull(e.reading_id, ''), '^[0-9a-f]{32}$')",
     "'reading_id is not 32 lowercase hex digits'"),
    ("received IS NULL", "'received_at is missing or not a time'"),
    ("ifNull(e.gateway_id, '') = ''", "'gateway_id is missing'"),
    ("measured IS NULL", "'reading.ts is missing or not a time'"),
    ("ifNull(r.device_id, '') = ''", "'reading.device_id is missing'"),
    ("r.seq IS NULL", "'reading.seq is missing or not an integer from 0 to 2^64 - 1'"),
    ("r.boot IS NULL AND arrayExists(p -> p.1 = 'boot' AND p.2 != 'null', pairs)",
     "'reading.boot is not an integer from 0 to 2^32 - 1'"),
    ("mistyped > 0",
     "concat('reading.', pairs[mistyped].1, ' is of the wrong type: ', pairs[mistyped].2)"),
    ("ifNull(r.kind, '') NOT IN ('container', 'crane', 'rtg', 'gate')",
     "'reading.kind is not container, crane, rtg or gate'"),
    ("ifNull(r.port, '') = ''", "'reading.port is missing'"),
]
_JUDGED = f"{INTAKE.name}_judged"
_EPOCH = "toDateTime64(0, 3, 'UTC')"  # a time for the rows that are rejected anyway
INTAKE_JUDGE_DDL = [
    f"CREATE TABLE IF NOT EXISTS {INTAKE.name} (topic String, kafka_partition UInt16, "
    "kafka_offset UInt64, raw String) ENGINE = Null",
    f"CREATE TABLE IF NOT EXISTS {_JUDGED} ("
    + ", ".join(f"`{c.name}` {Dialect(modern=True).type_of(c.kind)}" for c in TELEMETRY.columns)
    + ", topic String, problem String) ENGINE = Null",
    f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTAKE.name}_judge TO {_JUDGED} AS
    SELECT ifNull(measured, {_EPOCH}) AS ts, ifNull(received, {_EPOCH}) AS received_at,
           ifNull(r.device_id, '') AS device_id, ifNull(r.boot, 0) AS boot,
           ifNull(r.seq, 0) AS seq, ifNull(e.reading_id, '') AS reading_id,
           ifNull(r.kind, '') AS kind, ifNull(r.port, '') AS port,
           {", ".join(f"ifNull(r.{name}, '') AS {name}" for name in _READING_STRINGS)},
           {", ".join(f"r.{name} AS {name}" for name in _READING_NUMBERS)},
           ifNull(e.gateway_id, '') AS gateway_id, kafka_partition, kafka_offset, raw, topic,
           multiIf({", ".join(f"{condition}, {reason}" for condition, reason in _PROBLEMS)},
                   '') AS problem
    FROM (SELECT *,
                 JSONExtract(raw, 'Tuple(received_at Nullable(String),
                     gateway_id Nullable(String), reading_id Nullable(String))') AS e,
                 JSONExtract(raw, 'reading', '{_READING_TYPE}') AS r,
                 JSONExtractKeys(raw) AS keys,
                 JSONExtractKeysAndValuesRaw(raw, 'reading') AS pairs,
                 arrayFirstIndex(p -> NOT ({_KINDS_OF_VALUE}), pairs) AS mistyped,
                 parseDateTime64BestEffortOrNull(e.received_at, 3, 'UTC') AS received,
                 parseDateTime64BestEffortOrNull(r.ts, 3, 'UTC') AS measured
          FROM {INTAKE.name})""",
]


def intake_views(columns: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """The views that split the judged records: rows to telemetry, the rest to sink_rejects
    with the reason. ``columns``, the (name, type) of a telemetry table made elsewhere (a
    ClickHouse server's, written over HTTP), makes each value CAST to its type, and a time
    that a DateTime column cannot hold (1970 to 2106, where an insert would clamp it) a
    reject."""
    selected, sound, unsound = ", ".join(TELEMETRY.column_names), "problem = ''", "problem != ''"
    reason = "problem"
    short = [name for name, kind in columns or []
             if kind.startswith("DateTime") and not kind.startswith("DateTime64")]
    if columns is not None:
        selected = ", ".join(f"CAST(`{name}`, '{kind}') AS `{name}`" for name, kind in columns)
    if short:  # the judged table's columns, not the SELECT's aliases of them (already CAST)
        sound += "".join(f" AND {_JUDGED}.`{name}` >= toDateTime64(0, 3, 'UTC') AND "
                         f"{_JUDGED}.`{name}` < toDateTime64(4294967296, 3, 'UTC')"
                         for name in short)
        unsound = f"NOT ({sound})"
        reason = (f"if(problem != '', problem, "
                  f"'{' or '.join(short)} is before 1970 or after 2106 (a DateTime)')")
    return [
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTAKE.name}_rows TO {TELEMETRY.name} AS
    SELECT {selected} FROM {_JUDGED} WHERE {sound}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTAKE.name}_rejects TO {REJECTS.name} AS
    SELECT now() AS rejected_at, topic, kafka_partition, kafka_offset,
           concat('not a valid telemetry message: ', {reason}) AS reason, raw
    FROM {_JUDGED} WHERE {unsound}""",
    ]


INTAKE_DDL = [*INTAKE_JUDGE_DDL, *intake_views()]


def ddl(dialect: Dialect, ttl_days: int | None = None) -> list[str]:
    """Every statement that creates schema version SCHEMA_VERSION, idempotently."""
    statements = [
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version UInt32, applied_at DateTime) "
        "ENGINE = MergeTree ORDER BY version",
        *(create_table(t, dialect, ttl_days) for t in TABLES),
    ]
    statements += [f"CREATE VIEW IF NOT EXISTS {name} AS {sql.strip()}"
                   for name, sql in VIEWS.items()]
    return statements
