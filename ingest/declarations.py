"""Declarations intake: JSON Lines or CSV files validated and produced to declarations.v1."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from schemas import Declaration, encode, parse_declaration, topics
from schemas.base import describe_validation_error
from smartport.errors import InputRejected, StackError
from smartport.files import write_new
from smartport.kafka import produce, producer_config
from smartport.settings import Settings

CSV_LIST_SEPARATOR = ";"
_CSV_LISTS = ("seal_numbers", "hs_codes", "allowed_yard_blocks")
_CSV_FLOATS = ("gross_mass_kg",)
_CSV_INTS = ("version",)
_CSV_REEFER = ("reefer_min_c", "reefer_max_c")
_CSV_DANGEROUS = ("imdg_class", "un_number")
_DELIVERY_TIMEOUT_S = 60.0


@dataclass
class IntakeReport:
    produced: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _csv_row_to_json(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row as the JSON object of a declaration; empty cells mean 'absent'."""
    value: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "") and k}
    for name in _CSV_LISTS:
        if name in value:
            value[name] = [item.strip() for item in value[name].split(CSV_LIST_SEPARATOR)]
    for name in _CSV_FLOATS:
        if name in value:
            value[name] = _number(name, value[name], float)
    for name in _CSV_INTS:
        if name in value:
            value[name] = _number(name, value[name], int)
    if any(name in value for name in _CSV_REEFER):
        value["reefer"] = {"min_c": _number("reefer_min_c", value.pop("reefer_min_c", ""), float),
                           "max_c": _number("reefer_max_c", value.pop("reefer_max_c", ""), float)}
    if any(name in value for name in _CSV_DANGEROUS):
        value["dangerous_goods"] = {name: value.pop(name, "") for name in _CSV_DANGEROUS}
    return value


def _number(column: str, text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"column {column}: {text!r} is not a number") from None


def parse_file(path: Path) -> Iterator[tuple[int, str, Declaration | str]]:
    """(line number, the line's text, the declaration or why it was rejected) for every record
    of ``path``. A JSON Lines file is split on newlines only (JSON text may hold U+2028 and
    other characters that ``str.splitlines`` breaks on), and a line that is not UTF-8 is
    rejected on its own; a CSV file must be UTF-8 as a whole."""
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputRejected(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                                "save it as UTF-8 and load it again") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            row_text = ",".join(str(v) for v in row.values() if v is not None)
            try:
                raw = encode(_csv_row_to_json(row))
            except ValueError as exc:
                yield reader.line_num, row_text, str(exc)
                continue
            yield reader.line_num, row_text, _parse(raw)
        return
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = line.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            yield number, line.decode("utf-8", "replace"), f"not UTF-8: {exc.reason} at byte " \
                f"{exc.start}"
            continue
        if text.strip():
            yield number, text, _parse(text)


def _parse(raw: str | bytes) -> Declaration | str:
    try:
        json.loads(raw)
    except ValueError as exc:
        return f"not JSON: {exc}"
    try:
        return parse_declaration(raw)
    except ValidationError as exc:
        return describe_validation_error(exc)


def load(settings: Settings, path: Path) -> IntakeReport:
    """Validate ``path`` and produce every valid declaration, keyed by container number.

    Raises InputRejected (after producing the valid ones) when any line was rejected.
    """
    if not path.is_file():
        raise InputRejected(f"declarations file {path} does not exist")
    report = IntakeReport()
    failures: list[str] = []
    producer = Producer(producer_config(settings.kafka, "smartport-declarations",
                                        **{"message.timeout.ms": int(_DELIVERY_TIMEOUT_S * 1000)}))

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            report.produced += 1
        else:
            failures.append(str(error))

    rejects: list[str] = []
    for line, text, outcome in parse_file(path):
        if isinstance(outcome, str):
            report.rejected.append((line, outcome))
            rejects.append(json.dumps({"line": line, "reason": outcome, "text": text}) + "\n")
            continue
        produce(producer, topics.DECLARATIONS, outcome.container_no.encode(), encode(outcome),
                on_delivery=delivered)
    left = producer.flush(_DELIVERY_TIMEOUT_S)
    if left or failures:
        raise StackError(
            f"Kafka at {settings.kafka.bootstrap_servers} did not take {left + len(failures)} "
            f"declarations ({failures[0] if failures else 'timed out'}): check that it is up "
            "(`smartport stack status`) and load the file again (loading twice is harmless)"
        )
    if report.rejected:
        kept = path.with_name(path.name + ".rejected.jsonl")
        write_new(kept, "".join(rejects).encode("utf-8"))
        lines = "\n".join(f"  line {line}: {reason}" for line, reason in report.rejected[:50])
        more = len(report.rejected) - 50
        raise InputRejected(
            f"{len(report.rejected)} of {len(report.rejected) + report.produced} declarations in "
            f"{path} were rejected ({report.produced} valid ones were loaded):\n{lines}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nthe rejected lines and their reasons are in {kept}; fix them and load the "
            "file again"
        )
    return report
