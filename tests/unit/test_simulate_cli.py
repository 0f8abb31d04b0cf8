"""`smartport simulate` without a broker: files for replay, truth and declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main
from ingest import simulate
from ingest.fleet import SimMessage
from schemas import Rule, parse_declaration


def test_emit_jsonl_truth_and_declarations(tmp_path: Path) -> None:
    out, truth, decl, report = (tmp_path / n for n in ("m.jsonl", "t.jsonl", "d.jsonl", "r.json"))
    assert main(["simulate", "--count", "3000", "--rate", "0", "--seed", "4",
                 "--anomaly-rate", "0.05", "--invalid-rate", "0.02", "--emit-jsonl", str(out),
                 "--truth", str(truth), "--declarations-out", str(decl),
                 "--report", str(report)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3000
    assert all(line["topic"].startswith("port/CNSHK/") for line in lines)
    anomalies = [json.loads(line) for line in truth.read_text().splitlines()]
    assert anomalies
    assert {a["rule"] for a in anomalies} <= {r.value for r in Rule}
    declarations = [parse_declaration(line) for line in decl.read_text().splitlines()]
    assert len(declarations) == len({d.container_no for d in declarations}) > 0
    summary = json.loads(report.read_text())
    assert summary["published"] == 3000
    assert sum(summary["invalid"].values()) + summary["valid"] == 3000
    assert sum(summary["anomalies"].values()) == len(anomalies)


def test_count_or_duration_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate"]) == 2
    assert "give --duration SECONDS or --count MESSAGES" in capsys.readouterr().err



def test_a_run_bounded_by_time_never_cuts_an_anomaly_short(tmp_path: Path) -> None:
    # One six-message scenario, then single messages: the deadline (50 ms) passes during the
    # scenario (10 messages/s), so the run stops right after the scenario's last message.
    messages = [SimMessage("port/CNSHK/telemetry/container/trk-1", b"{}", "trk-1", index,
                           ends_scenario=index in (5, 6, 7, 8)) for index in range(9)]
    report = simulate.run(messages, mqtt_settings=None, rate=10, total=None,
                          duration=0.05, emit_jsonl=tmp_path / "m.jsonl", show_progress=False)
    assert report.published == 6
