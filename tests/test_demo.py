"""The README's main job, short: everything it reports must reconcile (exit 0)."""

import pytest

from smartport.cli import main
from smartport.settings import Settings

pytestmark = pytest.mark.stack


def test_short_demo_reconciles(stack: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "5", "--rate", "200", "--devices", "50"]) == 0
    output = capsys.readouterr().out
    assert "reconciled" in output
    assert "NOT reconciled" not in output
    assert "receipt verified offline and on the ledger: telemetry.v1/" in output
