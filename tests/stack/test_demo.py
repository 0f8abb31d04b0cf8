"""The README's main job, short: everything it reports must reconcile (exit 0)."""

import pytest

from deploy.cli import main
from smartport.settings import Settings


def _assert_reconciled(output: str) -> None:
    output = " ".join(output.split())  # the console wraps long lines at its width
    assert "reconciled" in output
    assert "NOT reconciled" not in output
    assert "✗" not in output
    assert "receipt verified offline and on the ledger: telemetry.v1/" in output
    assert "customs alerts against the simulator's ground truth" in output


def test_short_demo_reconciles(stack: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "5", "--rate", "200", "--devices", "50",
                 "--linked", "40"]) == 0
    output = " ".join(capsys.readouterr().out.split())
    _assert_reconciled(output)
    assert "one declaration, two ports" in output
    assert "transit faults against the ground truth" in output
    assert "discharge certificate verified offline and on the ledger: transit.certificates.v1/" \
        in output
    assert ", signed by terminal key " in output
    assert "stored in ClickHouse (chDB, FINAL)" in output
    assert "anchored to the file ledger" in output


def test_demo_on_the_real_services(stack: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "5", "--rate", "200", "--devices", "50", "--linked", "0",
                 "--ledger", "evm",
                 "--clickhouse", "clickhouse://127.0.0.1:9000/default"]) == 0
    output = capsys.readouterr().out
    _assert_reconciled(output)
    assert "stored in ClickHouse (server, FINAL)" in output
    assert "anchored to the evm+http ledger" in output
