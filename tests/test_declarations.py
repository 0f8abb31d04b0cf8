"""Declarations intake: JSON Lines and CSV, line-numbered rejections, real Kafka."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from ingest.declarations import parse_file
from schemas import Declaration, parse_declaration, topics
from smartport.settings import Settings
from tests.helpers import declaration
from tests.pipeline import high_watermarks, read_topic, unique

CSV_HEADER = ("declaration_id,container_no,status,gross_mass_kg,seal_numbers,hs_codes,"
              "reefer_min_c,reefer_max_c,imdg_class,un_number,vessel_imo,voyage,"
              "port_of_loading,port_of_discharge,allowed_yard_blocks,version,updated_at\n")
CSV_GOOD = ("D-1,CSQU3054383,held,21000,SL1;SL2,850440;940360,-20,-16,3,UN1203,9074729,024E,"
            "CNSHK,NLRTM,B3;B4,2,2026-11-24T01:00:00Z\n")


def test_jsonl_lines_are_numbered(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(declaration()) + "\n\n{oops\n"
                    + json.dumps(declaration(container_no="CSQU3054384")) + "\n")
    results = [(line, outcome) for line, _, outcome in parse_file(path)]
    assert [line for line, _ in results] == [1, 3, 4]
    assert isinstance(results[0][1], Declaration)
    assert results[1][1] == "not JSON: Expecting property name enclosed in double quotes: " \
        "line 1 column 2 (char 1)"
    assert "container_no: Value error, container number 'CSQU3054384' has check digit 4, " \
        "want 3" in str(results[2][1])


def test_csv_columns_become_a_declaration(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(CSV_HEADER + CSV_GOOD + CSV_GOOD.replace("21000", "heavy"))
    (line, _, first), (bad_line, _, reason) = parse_file(path)
    assert (line, bad_line) == (2, 3)
    assert isinstance(first, Declaration)
    assert first.seal_numbers == ("SL1", "SL2")
    assert first.reefer is not None
    assert first.reefer.max_c == -16.0
    assert first.dangerous_goods is not None
    assert first.dangerous_goods.un_number == "UN1203"
    assert first.allowed_yard_blocks == ("B3", "B4")
    assert reason == "column gross_mass_kg: 'heavy' is not a number"


@pytest.mark.stack
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


@pytest.mark.stack
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


def test_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["declarations", "load", str(tmp_path / "none.jsonl")]) == 4
    assert "none.jsonl does not exist" in capsys.readouterr().err
