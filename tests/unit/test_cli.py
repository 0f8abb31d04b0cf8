import json
import re
from pathlib import Path

import pytest

from deploy.cli import main
from schemas.registry import MESSAGES


def test_schemas_export_writes_every_message(tmp_path: Path) -> None:
    assert main(["schemas", "export", str(tmp_path)]) == 0
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {f"{name}.schema.json" for name in MESSAGES}
    declaration = json.loads((tmp_path / "Declaration.schema.json").read_text())
    assert "container_no" in declaration["required"]


def test_asyncapi_check_passes_on_the_committed_document() -> None:
    assert main(["schemas", "asyncapi", "--check"]) == 0


def test_bad_settings_are_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTPORT_KAFKA__PARTITIONS", "zero")
    assert main(["stack", "status"]) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_missing_config_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "none.toml"), "stack", "status"]) == 2
    assert "none.toml does not exist" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "named"), [
    (["--ledger", "paper"], "--ledger 'paper': use file or evm"),
    (["--clickhouse", "http://127.0.0.1:8123"], "clickhouse://127.0.0.1:9000/default"),
])
def test_demo_back_end_choices_are_checked_first(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args]) == 2
    assert named in capsys.readouterr().err


def test_the_terminal_key_is_made_once_kept_private_and_its_id_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTPORT_STATE_DIR", str(tmp_path))
    assert main(["terminal-key"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["terminal-key"]) == 0
    assert capsys.readouterr().out.strip() == first  # the same key, not a new one
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    key = tmp_path / "keys" / "terminal.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.with_suffix(".pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(("args", "says"), [
    (["--app-id", "port ops"], "--app-id 'port ops': use only letters"),
    (["--app-id", "x" * 240], "characters, over Kafka's 249"),
    (["--app-id", "ops/../x"], "use only letters, digits"),
    (["--instance-id", ""], "--instance-id '': use only letters"),
    (["--instance-id", "wörker-1"], "use only letters, digits"),
    (["--instance-id", "w" * 250], "--instance-id 'wwww"),
])
def test_worker_ids_kafka_would_refuse_are_a_clear_error(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything starts: a bad name would fail deep inside faust's or
    librdkafka's group join, as a retry loop or a broker error."""
    assert main(["streams", *args]) == 2
    assert says in capsys.readouterr().err
