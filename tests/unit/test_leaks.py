"""Small leaks an attacker looks for: secrets in messages, files written through planted
symlinks, inputs read whole however large."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchoring.errors import LedgerError
from anchoring.ledgers.evm import EvmLedger
from deploy.cli import MAX_RECEIPT_BYTES, main
from ingest import declarations
from smartport.errors import ConfigError, InputRejected, StackError
from smartport.redaction import redact_url
from smartport.settings import Settings
from streams.analytics.store import open_store


@pytest.mark.parametrize(("url", "shown"), [
    ("clickhouse://analyst:s3cret@db.example:9000/port", "clickhouse://analyst:***@db.example:9000/port"),
    ("https://rpc.example/v3?apikey=s3cret", "https://rpc.example/v3?***"),
    ("mqtts://dev-1:s3cret@127.0.0.1:8883", "mqtts://dev-1:***@127.0.0.1:8883"),
    ("chdb:///var/lib/smartport/chdb", "chdb:///var/lib/smartport/chdb"),
    ("http://[::1", "<an unparsable URL>"),
])
def test_urls_in_messages_hide_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_unreachable_clickhouse_does_not_print_its_password() -> None:
    with pytest.raises(StackError) as error:
        open_store("clickhouse://analyst:s3cret-pw@127.0.0.1:1/port")
    assert "s3cret-pw" not in str(error.value)
    assert "analyst:***@127.0.0.1:1" in str(error.value)


@pytest.mark.parametrize("port", ["x", "", "0", "65536", "-1", "8123abc", "%2D1",
                                  "\uff18\uff11\uff12\uff13"])  # full-width 8123
def test_a_clickhouse_http_port_that_is_no_port_is_refused_by_name(port: str) -> None:
    """Refused before any connection, with the password hidden."""
    with pytest.raises(ConfigError, match="is not a port number") as error:
        open_store(f"clickhouse://analyst:s3cret-pw@127.0.0.1:1/port?http_port={port}")
    assert "s3cret-pw" not in str(error.value)


def test_an_option_of_the_clickhouse_url_that_is_none_of_ours_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"htp_port in the ClickHouse URL .* is no option"):
        open_store("clickhouse://127.0.0.1:1/port?htp_port=8123")


def test_an_unreachable_evm_node_does_not_print_its_api_key(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as error:
        EvmLedger("http://127.0.0.1:1/rpc?key=s3cret-key", private_key=None, confirmations=1,
                  finality="confirmations", index_path=tmp_path / "index.jsonl")
    assert "s3cret-key" not in str(error.value)


def test_rejected_declarations_are_not_written_through_a_planted_symlink(tmp_path: Path) -> None:
    source = tmp_path / "declarations.jsonl"
    source.write_text('{"not": "a declaration"}\n')
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "declarations.jsonl.rejected.jsonl").symlink_to(victim)
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(InputRejected, match="is a symbolic link"):
        declarations.load(settings, source)
    assert victim.read_text() == "precious\n"


def test_a_huge_receipt_is_refused_before_it_is_read(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    huge, record = tmp_path / "receipt.json", tmp_path / "record.bin"
    with huge.open("wb") as handle:
        handle.truncate(MAX_RECEIPT_BYTES * 50)  # sparse: 50 MiB that cost no disk
    record.write_bytes(b"{}")
    assert main(["verify", str(huge), "--record", str(record), "--trust-ledger", "0" * 64]) == 4
    assert "too large for a receipt" in capsys.readouterr().err
