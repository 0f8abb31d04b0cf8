"""Declarations files parsed: JSON Lines and CSV, line-numbered rejections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from ingest.declarations import parse_file
from schemas import Declaration
from tests.helpers import declaration

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


def test_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["declarations", "load", str(tmp_path / "none.jsonl")]) == 4
    assert "none.jsonl does not exist" in capsys.readouterr().err
