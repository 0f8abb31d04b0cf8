from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.topics import telemetry_filter_problem
from smartport.settings import KafkaSettings, Settings, load_settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", 1883)
    assert settings.resolved_clickhouse_url.startswith("chdb://")
    assert settings.resolved_ledger_url.startswith("file://")


def test_environment_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPORT_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("SMARTPORT_MQTT__URL", "mqtts://broker.example:8883")
    settings = Settings()
    assert settings.kafka.partitions == 12
    assert (settings.mqtt.port, settings.mqtt.tls) == (8883, True)


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTPORT_CONFIG", raising=False)
    config = tmp_path / "smartport.toml"
    config.write_text(
        'clickhouse_url = "clickhouse://127.0.0.1:9000/port"\n'
        "[kafka]\nsecurity_protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n"
        'sasl_username = "gw"\nsasl_password = "secret"\n'
    )
    settings = load_settings(config)
    client = settings.kafka.client_config()
    assert client["sasl.password"] == "secret"
    assert client["security.protocol"] == "SASL_SSL"
    assert settings.resolved_clickhouse_url == "clickhouse://127.0.0.1:9000/port"
    assert "secret" not in repr(settings)


def test_env_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "smartport.toml"
    config.write_text("[kafka]\npartitions = 3\n")
    monkeypatch.setenv("SMARTPORT_CONFIG", str(config))
    monkeypatch.setenv("SMARTPORT_KAFKA__PARTITIONS", "9")
    assert Settings().kafka.partitions == 9


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPORT_MQTT__URL", "http://broker:80")
    with pytest.raises(ValidationError, match="must look like mqtt://host:1883"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [
    ("SINK_SECONDS", "inf"), ("SINK_SECONDS", "1e300"), ("ANCHOR_SECONDS", "inf"),
    ("SINK_ROWS", "1000000000"), ("ANCHOR_RECORDS", "1000000000"),
])
def test_batch_bounds_that_would_never_flush_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                         name: str, value: str) -> None:
    """A sink or anchorer that never writes what it holds (rows and offsets held forever, or
    rows until memory runs out) would look alive while keeping nothing."""
    monkeypatch.setenv(f"SMARTPORT_BATCHES__{name}", value)
    with pytest.raises(ValidationError, match=f"batches.{name.lower()}"):
        Settings()


def test_a_consumer_out_of_its_group_is_replaced_before_its_process_gives_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().resolved_replace_after_s == 30.0  # a quarter of the 120-s bound
    assert KafkaSettings(join_timeout_s=5).resolved_replace_after_s == 1.25
    assert KafkaSettings(replace_after_s=10).resolved_replace_after_s == 10.0
    monkeypatch.setenv("SMARTPORT_KAFKA__REPLACE_AFTER_S", "120")
    with pytest.raises(ValidationError, match=r"kafka.replace_after_s \(120\) must be less than "
                                              r"kafka.join_timeout_s \(120\)"):
        Settings()


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
@pytest.mark.parametrize("name", ["JOIN_TIMEOUT_S", "REPLACE_AFTER_S"])
def test_consumer_bounds_that_would_never_fire_are_refused(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """An infinite bound: a consumer out of its group idles alive for ever."""
    monkeypatch.setenv(f"SMARTPORT_KAFKA__{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(("topic_filter", "problem"), [
    ("port/+/+/+/telemetry", None),
    ("port/CNSHK/crane/+/telemetry", None),
    ("port/#", "not a telemetry filter"),
    ("port/+/crane/+/alerts", "not a telemetry filter"),
    ("port/+/cr+ne/+/telemetry", "each level is + or a name"),
    ("port//crane/+/telemetry", "each level is + or a name"),
    ("$share/g/port/+/+/+/telemetry", "not a telemetry filter"),
])
def test_gateway_subscriptions_stay_within_the_telemetry_topics(
    topic_filter: str, problem: str | None
) -> None:
    found = telemetry_filter_problem(topic_filter)
    assert found is None if problem is None else problem in (found or "")


def test_a_bad_subscription_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTPORT_MQTT__SUBSCRIPTIONS", '["port/#"]')
    with pytest.raises(ValidationError, match="not a telemetry filter"):
        Settings()


@pytest.mark.parametrize(("protocol", "want"), [
    ("PLAINTEXT", None), ("SSL", "SSL"), ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
    ("SASL_SSL", "SASL_SSL"),
])
def test_the_streams_worker_speaks_the_configured_kafka_security(protocol: str,
                                                                  want: str | None) -> None:
    """faust's broker URL alone connects in plaintext whatever the settings say."""
    from streams.app import faust_credentials

    kafka = KafkaSettings(security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="streams", sasl_password="s3cret")
    credentials = faust_credentials(kafka)
    if want is None:
        assert credentials is None
        return
    assert credentials is not None
    assert credentials.protocol.value == want
    if want.startswith("SASL"):
        assert (credentials.username, credentials.password,  # type: ignore[attr-defined]
                credentials.mechanism.value) == ("streams", "s3cret", "SCRAM-SHA-512")  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [
    "SMARTPORT_KAFKA__REJOIN_AFTER_S",  # since renamed replace_after_s: an old deployment's
    "SMARTPORT_MQTT__RECIEVE_MAXIMUM",  # a typo
    "SMARTPORT_LEDGER_KEYFILE",
    "SMARTPORT_BATCHES__SINK_SECONDS__X",
])
def test_an_unknown_setting_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch,
                                                        name: str) -> None:
    """A misspelt or retired setting must not be ignored: the operator believes it applies."""
    monkeypatch.setenv(name, "5")
    with pytest.raises(ValueError, match=name):
        Settings()


@pytest.mark.parametrize(("table", "key"), [("kafka", "rejoin_after_s"), ("mqtt", "hots"),
                                            ("batches", "sink_second")])
def test_an_unknown_setting_in_the_config_file_is_named(tmp_path: Path, table: str,
                                                        key: str) -> None:
    config = tmp_path / "smartport.toml"
    config.write_text(f"[{table}]\n{key} = 5\n")
    with pytest.raises(ValidationError, match=f"{table}.{key}"):
        load_settings(config)


def test_the_config_file_variable_is_not_an_unknown_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "smartport.toml"
    config.write_text("[kafka]\npartitions = 3\n")
    monkeypatch.setenv("SMARTPORT_CONFIG", str(config))
    monkeypatch.setenv("smartport_kafka__join_timeout_s", "100")  # names are case-insensitive
    settings = Settings()
    assert (settings.kafka.partitions, settings.kafka.join_timeout_s) == (3, 100)
