"""A stage of the main job that misses its deadline is named, with the end of its log."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from deploy.demo import _wait
from deploy.pipeline import PipelineProcess


def test_a_missed_deadline_shows_the_stage_and_its_log(tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    log.write_text("".join(f"line {n} [not markup]\n" for n in range(100)))
    console = Console(record=True, width=200)
    sink = PipelineProcess("sink", ["sink"], log, {})

    assert not _wait(console, "the sink to store the run", lambda: False, timeout=0.1,
                     stage=sink)

    shown = console.export_text()
    assert "the sink to store the run: not done after 0 s" in shown
    assert f"sink exited; {log} ends:" in shown
    assert "line 99 [not markup]" in shown
    assert "line 60 [not markup]" in shown
    assert "line 59 " not in shown  # the last 40 lines


def test_a_met_deadline_says_nothing(tmp_path: Path) -> None:
    console = Console(record=True)
    assert _wait(console, "anything", lambda: True, timeout=5,
                 stage=PipelineProcess("sink", ["sink"], tmp_path / "sink.log", {}))
    assert "not done" not in console.export_text()
