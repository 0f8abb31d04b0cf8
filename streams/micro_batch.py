"""Micro-batches: several telemetry.v1 records of one partition in one Kafka record (pure).

faust costs about the same per Kafka record whatever the record holds (an empty agent manages
2,700 to 4,000 records/s on two cores), so the streams worker does not read telemetry.v1 record by
record: its relay (streams.relay) packs each partition's new records into micro-batches on an
internal topic, and the worker unpacks them. telemetry.v1 keeps one reading per record.

A batch is a version byte, then for each record its telemetry.v1 offset (8 bytes, big-endian,
signed), the length of its value (4 bytes, big-endian) and the value's bytes, in offset order.
Values are carried as they are, whatever they hold: the worker validates them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

VERSION = 1
_ENTRY = struct.Struct(">qI")
_VALUE_MAX = 2**32 - 1


class MalformedBatch(ValueError):
    """Bytes that are not a micro-batch of this version (written by something else)."""


def pack(records: Iterable[tuple[int, bytes]]) -> bytes:
    """One batch of ``(offset, value)`` records."""
    parts = [bytes([VERSION])]
    for offset, value in records:
        if len(value) > _VALUE_MAX:
            raise ValueError(f"a record of {len(value)} bytes does not fit a micro-batch entry")
        parts += (_ENTRY.pack(offset, len(value)), value)
    return b"".join(parts)


def unpack(batch: bytes) -> list[tuple[int, bytes]]:
    """The ``(offset, value)`` records of a batch; ``MalformedBatch`` names what is wrong."""
    if not batch or batch[0] != VERSION:
        found = f"version byte {batch[0]}" if batch else "an empty record"
        raise MalformedBatch(f"not a version {VERSION} micro-batch: {found}")
    records = []
    position, end = 1, len(batch)
    while position < end:
        if end - position < _ENTRY.size:
            raise MalformedBatch(f"truncated entry header at byte {position} of {end}")
        offset, length = _ENTRY.unpack_from(batch, position)
        if offset < 0:  # no Kafka record has one; the alerts' evidence would carry it
            raise MalformedBatch(f"an entry at byte {position} has offset {offset}")
        position += _ENTRY.size
        if length > end - position:
            raise MalformedBatch(f"an entry of {length} bytes at byte {position} runs past the "
                                 f"end of the batch ({end} bytes)")
        records.append((offset, batch[position:position + length]))
        position += length
    return records


def chunks(records: list[tuple[int, bytes]], max_bytes: int) -> Iterator[list[tuple[int, bytes]]]:
    """``records`` in consecutive runs of at most ``max_bytes`` of values each (a single
    larger record is a run of its own): batches stay within what Kafka takes."""
    run: list[tuple[int, bytes]] = []
    size = 0
    for record in records:
        if run and size + len(record[1]) > max_bytes:
            yield run
            run, size = [], 0
        run.append(record)
        size += len(record[1])
    if run:
        yield run
