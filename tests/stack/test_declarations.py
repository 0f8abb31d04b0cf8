"""Declarations loaded into real Kafka: keyed by container, rejected lines reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from schemas import parse_declaration, topics
from smartport.settings import Settings
from tests.helpers import declaration
from tests.stack.pipeline import high_watermarks, read_topic, unique


def test_load_produces_keyed_by_container(stack: Settings, tmp_path: Path) -> None:
    since = high_watermarks(stack, topics.DECLARATIONS)
    ids = [unique("DEC") for _ in range(3)]
    numbers = ["CSQU3054383", "BICU1234565", "CSQU0000070"]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(declaration(declaration_id=i, container_no=n)) + "\n"
                            for i, n in zip(ids, numbers, strict=True)))
    assert main(["declarations", "load", str(path)]) == 0
    records = [r for r in read_topic(stack, topics.DECLARATIONS, since)
               if r.value["declaration_id"] in ids]
    assert sorted(r.key.decode() for r in records) == sorted(numbers)
    for record in records:
        assert parse_declaration(json.dumps(record.value)).container_no == record.key.decode()


def test_load_reports_rejected_lines_and_exits_non_zero(
    stack: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    since = high_watermarks(stack, topics.DECLARATIONS)
    good_id = unique("DEC")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(declaration(declaration_id=good_id)) + "\n"
                    + json.dumps(declaration(status="lost")) + "\n")
    assert main(["declarations", "load", str(path)]) == 4
    err = capsys.readouterr().err
    assert "1 of 2 declarations" in err
    assert "line 2: status: Input should be 'lodged'" in err
    assert any(r.value["declaration_id"] == good_id
               for r in read_topic(stack, topics.DECLARATIONS, since))
