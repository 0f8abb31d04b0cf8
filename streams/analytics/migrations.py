"""Create the analysts' schema, or migrate an older one to it, on either back-end.

A table whose layout changed (``schemas.clickhouse.CHANGED_IN``) is renamed aside, created anew,
and refilled by converting each old row's ``raw`` Kafka value with the sink's own converters, so
migrated rows are exactly what the sink would write today (new identity columns included). The
old rows are read without FINAL: readings the old identity had not yet folded survive. A row that
no longer converts is kept in ``sink_rejects`` with the reason. An interrupted migration resumes
on the next start (the renamed table is still there; copying twice folds to the same rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from schemas import clickhouse as ch
from streams.analytics.rows import CONVERTERS, Row, reject_row
from streams.analytics.store import ChdbStore, Store

log = logging.getLogger("smartport.analytics.migrations")

COPY_CHUNK = 5_000
Progress = Callable[[str], None]


def ensure_schema(store: Store, ttl_days: int | None, progress: Progress = log.info) -> None:
    """Create (or migrate to) schema version ``SCHEMA_VERSION``; idempotent."""
    dialect = ch.Dialect(modern=True) if isinstance(store, ChdbStore) else ch.Dialect.for_version(
        store.version())
    statements = ch.ddl(dialect, ttl_days)
    store.execute(statements[0])  # the version table
    applied = _applied_version(store)
    aside = _set_aside(store, applied, progress)
    intake = ch.INTAKE_DDL if isinstance(store, ChdbStore) else []  # tested on chDB only
    for statement in [*statements[1:], *intake]:
        store.execute(statement)
    for table in ch.TABLES:
        if table.name in aside:
            _copy(store, table, aside[table.name], progress)
    if applied < ch.SCHEMA_VERSION:
        store.insert(ch.VERSIONS, [{"version": ch.SCHEMA_VERSION,
                                    "applied_at": datetime.now(UTC)}])


def _applied_version(store: Store) -> int:
    _, rows = store.query(f"SELECT max(version) FROM {ch.VERSION_TABLE}")
    version = int(rows[0][0] or 0) if rows else 0
    if version == 0 and _existing(store, ["telemetry"]):
        return 1  # made by version 1, stopped before it recorded itself
    return version


def _existing(store: Store, names: list[str]) -> set[str]:
    listed = ", ".join(f"'{name}'" for name in names)
    _, rows = store.query("SELECT name FROM system.tables "
                          f"WHERE database = currentDatabase() AND name IN ({listed})")
    return {str(row[0]) for row in rows}


def _set_aside(store: Store, applied: int, progress: Progress) -> dict[str, str]:
    """Rename every table to migrate out of the way: {table: its old copy}."""
    changed = {name for version, names in ch.CHANGED_IN.items() if applied < version
               for name in names}
    if applied == 0 or not changed:
        return {}  # a new store, or a current one: nothing to migrate
    olds = {name: f"{name}_schema{applied}" for name in changed}
    pending = _existing(store, list(olds.values()))
    present = _existing(store, sorted(changed))
    aside = {}
    for name in sorted(changed):
        old = olds[name]
        if old in pending:
            aside[name] = old  # an interrupted migration: copy again from the same rows
        elif name in present:
            progress(f"schema {applied} → {ch.SCHEMA_VERSION}: {name} renamed to {old}")
            store.execute(f"RENAME TABLE {name} TO {old}")
            aside[name] = old
    return aside


def _copy(store: Store, table: ch.Table, old: str, progress: Progress) -> None:
    topic = next(t for t, (target, _) in CONVERTERS.items() if target is table)
    convert = CONVERTERS[topic][1]
    has_position = "kafka_partition" in table.column_names
    position = "kafka_partition, kafka_offset" if has_position else "0, 0"
    order = "kafka_partition, kafka_offset, raw" if has_position else "raw"
    _, counted = store.query(f"SELECT count() FROM {old}")
    total = int(counted[0][0])
    copied = rejected = 0
    while copied + rejected < total:
        _, rows = store.query(
            f"SELECT raw, {position} FROM {old} ORDER BY {order} "
            f"LIMIT {COPY_CHUNK} OFFSET {copied + rejected}")
        if not rows:
            break
        now = datetime.now(UTC)
        good: list[Row] = []
        bad: list[Row] = []
        for raw, partition, offset in rows:
            value = str(raw).encode()
            try:
                good.append(convert(value, int(partition), int(offset)))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                bad.append(reject_row(topic, int(partition), int(offset), value, now=now,
                                      reason=f"not migrated to schema {ch.SCHEMA_VERSION}: {exc}"))
        if good:
            store.insert(table, good)
        if bad:
            store.insert(ch.REJECTS, bad)
        copied, rejected = copied + len(good), rejected + len(bad)
        progress(f"{table.name}: {copied + rejected:,} of {total:,} rows copied from {old}")
    store.execute(f"DROP TABLE {old}")
    progress(f"{table.name}: migrated to schema {ch.SCHEMA_VERSION} — {copied:,} rows, "
             f"{rejected:,} kept in {ch.REJECTS.name}; {old} dropped")
