"""The analysts' query port of a sink that owns a chDB store, tried as a hostile local process
would, and the same read-only discipline on the ClickHouse server."""

from __future__ import annotations

import http.client
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.cli import main
from deploy.pipeline import SMARTPORT, free_port
from deploy.services import CLICKHOUSE_PORT, HOST
from smartport.errors import InputRejected
from smartport.settings import Settings
from streams.analytics.query import query
from streams.analytics.query_server import MAX_SQL_BYTES
from tests.stack.pipeline import unique, wait_for

# What a local attacker (or a careless analyst) sends; each must be refused, the store intact.
HOSTILE = {
    "drop": "DROP TABLE telemetry",
    "delete": "ALTER TABLE telemetry DELETE WHERE 1",
    "insert": "INSERT INTO alerts (alert_id) VALUES ('forged')",
    "read a file": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "write a file": "INSERT INTO FUNCTION file('/tmp/smartport-owned.csv', 'CSV') SELECT 1",
    "fetch a url": "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "another server": "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "two statements": "SELECT 1; DROP TABLE telemetry",
    "lift readonly": "SET readonly = 0",
    "unbounded result": "SELECT number FROM system.numbers LIMIT 5000000",
}


@pytest.fixture
def sink_settings(stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Settings]:
    """A sink owning its own chDB store, answering on its own query port."""
    port, state = free_port(), tmp_path / "state"
    env = {"SMARTPORT_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "SMARTPORT_QUERY_PORT": str(port), "SMARTPORT_STATE_DIR": str(state)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = tmp_path / "sink.log"
    with log.open("ab") as handle:
        sink = subprocess.Popen([*SMARTPORT, "sink", "--group", unique("sink")], stdout=handle,
                                stderr=handle, env={**env, "PATH": "/usr/bin:/bin"})
    settings = stack.model_copy(update={"clickhouse_url": env["SMARTPORT_CLICKHOUSE_URL"],
                                        "query_port": port, "state_dir": state})
    try:
        wait_for(lambda: _answers(settings), 90, f"the sink's query port (log: {log})")
        yield settings
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(60)


def _answers(settings: Settings) -> bool:
    try:
        return query(settings, "SELECT 1", open_embedded=False)[1] == [(1,)]
    except Exception:
        return False


def _post(port: int, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("POST", "/query", body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_query_port_answers_reads_and_refuses_everything_else(
    sink_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = "SELECT count() FROM system.tables WHERE database = currentDatabase()"
    before = query(sink_settings, tables, open_embedded=False)
    assert before[1][0][0] >= 5
    for name, sql in HOSTILE.items():
        assert main(["sql", sql]) == 4, name
        assert "ClickHouse refused the query" in capsys.readouterr().err, name
    assert query(sink_settings, tables, open_embedded=False) == before
    assert query(sink_settings, "SELECT count() FROM alerts WHERE alert_id = 'forged'",
                 open_embedded=False)[1] == [(0,)]
    assert not Path("/tmp/smartport-owned.csv").exists()
    assert main(["sql", "SELECT count() FROM telemetry", "--format", "csv"]) == 0


def test_the_query_port_wants_the_token_its_host_name_and_a_bounded_body(
    sink_settings: Settings
) -> None:
    port = sink_settings.query_port
    token_file = sink_settings.query_token_file
    assert token_file.stat().st_mode & 0o777 == 0o600
    good = {"Host": f"127.0.0.1:{port}",
            "Authorization": f"Bearer {token_file.read_text().strip()}"}
    assert _post(port, b"SELECT 1", good) == 200
    assert _post(port, b"SELECT 1", {"Host": good["Host"]}) == 401
    assert _post(port, b"SELECT 1", {**good, "Authorization": "Bearer guessed"}) == 401
    # A browser page on a rebinding domain reaches loopback under another name.
    assert _post(port, b"SELECT 1", {**good, "Host": f"attacker.example:{port}"}) == 421
    assert _post(port, b"SELECT 1 -- " + b"x" * MAX_SQL_BYTES, good) == 413


def test_analysts_cannot_write_to_the_clickhouse_server_either(stack: Settings) -> None:
    database = unique("readonly").replace("-", "_")
    settings = stack.model_copy(update={
        "clickhouse_url": f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}"})
    assert query(settings, "SELECT count() FROM telemetry")[1] == [(0,)]
    for name in ("drop", "insert", "read a file", "lift readonly"):
        with pytest.raises(InputRejected, match="ClickHouse refused the query"):
            query(settings, HOSTILE[name])
    assert query(settings, "SELECT count() FROM telemetry")[1] == [(0,)]


def test_analysts_of_the_server_have_clickhouse_client(stack: Settings) -> None:
    """`stack up` installs ClickHouse's own client beside the server."""
    answer = subprocess.run(["clickhouse-client", "--host", HOST, "--port", str(CLICKHOUSE_PORT),
                             "--query", "SELECT 40 + 2"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (answer.returncode, answer.stdout.strip()) == (0, "42"), answer.stderr


def test_analysts_ask_the_query_port_with_their_own_clickhouse_tools(
    sink_settings: Settings
) -> None:
    """The port speaks the ClickHouse HTTP interface: clickhouse-connect and a plain GET
    work unchanged, with the token as the password; writes are refused the ClickHouse way."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError

    port, token = sink_settings.query_port, sink_settings.query_token_file.read_text().strip()
    client = clickhouse_connect.get_client(host=HOST, port=port, username="analyst",
                                           password=token)
    assert client.query("SELECT count() FROM telemetry").result_rows[0][0] >= 0
    with pytest.raises(DatabaseError, match="164"):  # READONLY
        client.command("DROP TABLE telemetry")
    with pytest.raises(DatabaseError, match="401"):
        clickhouse_connect.get_client(host=HOST, port=port, username="analyst",
                                      password="guessed")
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("GET", "/?query=SELECT%2040%2B2", headers={
            "Host": f"127.0.0.1:{port}", "X-ClickHouse-Key": token})
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b"42\n")
    finally:
        connection.close()
