"""`smartport simulate` publishing over real MQTT and counting acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.cli import main
from smartport.settings import Settings


def test_publishes_over_mqtt_and_counts_acks(stack: Settings, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert main(["simulate", "--count", "500", "--rate", "0", "--seed", "2",
                 "--report", str(report)]) == 0
    summary = json.loads(report.read_text())
    assert summary["acknowledged"] == 500
    assert summary["refused"] == 0
