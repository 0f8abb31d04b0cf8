"""The one settings object: every endpoint and tunable of smartport.

Sources, highest priority first: keyword arguments, environment variables prefixed
``SMARTPORT_`` (nested with ``__``, e.g. ``SMARTPORT_KAFKA__BOOTSTRAP_SERVERS``), the TOML file
named by ``SMARTPORT_CONFIG`` (or ``--config``), then the defaults below, which point at the
local stack that ``smartport stack up`` starts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.anchoring import HashAlgorithm
from schemas.topics import MQTT_TELEMETRY_FILTER, check_telemetry_filters

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "SMARTPORT_CONFIG"
ENV_PREFIX = "SMARTPORT_"
# A misspelt or retired key is refused, not ignored: its operator believes it applies.
SECTION_CONFIG = ConfigDict(extra="forbid")


class KafkaSettings(BaseModel):
    model_config = SECTION_CONFIG

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    partitions: int = Field(6, ge=1, description="partition count of every project topic")
    replication_factor: int = Field(1, ge=1, description="default: 3 with a cluster, else 1")
    brokers: int = Field(1, ge=1, le=9, description="Kafka nodes the local stack runs on loopback")
    join_timeout_s: float = Field(120.0, gt=0, allow_inf_nan=False, description=(
        "a consumer (streams, anchorer, sink) not assigned its partitions for this long exits "
        "non-zero, for a supervisor to restart it"))
    replace_after_s: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "a Kafka client stuck this long is closed and replaced by a new one: a consumer out of "
        "its group (smartport.group_consumer), a producer that delivers nothing while it holds "
        "records (the gateway, the streams relay, the anchorer); default: a quarter of "
        "join_timeout_s"))

    @model_validator(mode="after")
    def _replace_before_giving_up(self) -> KafkaSettings:
        if self.replace_after_s is not None and self.replace_after_s >= self.join_timeout_s:
            raise ValueError(
                f"kafka.replace_after_s ({self.replace_after_s:g}) must be less than "
                f"kafka.join_timeout_s ({self.join_timeout_s:g}): a consumer out of its group "
                "is replaced before its process gives up; lower the one or raise the other")
        return self

    @model_validator(mode="after")
    def _local_cluster_defaults(self) -> KafkaSettings:
        """With a local cluster, clients know every node and topics are replicated three ways,
        unless told otherwise."""
        if self.brokers > 1:
            if "bootstrap_servers" not in self.model_fields_set:
                self.bootstrap_servers = ",".join(
                    f"127.0.0.1:{9092 + 2 * i}" for i in range(self.brokers))
            if "replication_factor" not in self.model_fields_set:
                self.replication_factor = min(3, self.brokers)
        return self

    @property
    def resolved_replace_after_s(self) -> float:
        return self.replace_after_s or self.join_timeout_s / 4

    def client_config(self) -> dict[str, Any]:
        """librdkafka options shared by every producer, consumer and admin client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_ca_location:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        return config


class MqttSettings(BaseModel):
    model_config = SECTION_CONFIG

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    username: str | None = None
    password: SecretStr | None = None
    tls_ca: Path | None = None
    share_group: str = Field("", description=(
        "MQTT shared-subscription group; empty (the default): a plain persistent subscription "
        "per gateway, which Mosquitto keeps across its restarts (it does not keep shared ones)"))
    subscriptions: tuple[str, ...] = Field((MQTT_TELEMETRY_FILTER,), min_length=1, description=(
        "telemetry filters this gateway subscribes to: split the topic space among gateways "
        "(e.g. by port or kind) to scale out without shared subscriptions"))
    session_expiry_s: int = Field(
        3600, ge=0, description="how long the broker keeps a gateway's queue while it is down"
    )
    receive_maximum: int = Field(
        5000, ge=1, le=65535, description="MQTT messages in flight to a gateway (bounds memory)"
    )

    @field_validator("subscriptions")
    @classmethod
    def _telemetry_filters(cls, filters: tuple[str, ...]) -> tuple[str, ...]:
        return check_telemetry_filters(filters)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"MQTT url {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class BatchSettings(BaseModel):
    model_config = SECTION_CONFIG

    # Bounded above: a batch never closed holds its records (and their offsets) forever.
    anchor_records: int = Field(1000, ge=1, le=1_000_000, description="records per Merkle batch")
    anchor_seconds: float = Field(5.0, gt=0, le=3600)
    # Rows are held whole until inserted: the row bound is what bounds the sink's memory (two
    # batches: one being inserted, the next being read). 20,000 rather than 10,000: on chDB
    # 92-100k rows/s against 86-88k (bench/sink_bench.py, two pairs), the server's the same.
    sink_rows: int = Field(20_000, ge=1, le=100_000, description="rows per ClickHouse insert, "
                           "at most")
    # Every insert has a fixed cost (on chDB ~50 ms, most of it analysing the telemetry
    # intake's views) and makes a part to merge: a 5-s flush took the sink from 81 to 54
    # CPU-µs per row at 2,000 rows/s (bench/sink_bench.py), for rows up to 5 s later in
    # ClickHouse (alerts do not wait for it: the streams worker reads Kafka).
    sink_seconds: float = Field(5.0, gt=0, le=3600, description="seconds a row waits for its "
                                "insert, at most")
    # Each commit of the streams worker writes back every state changed since the last one and
    # commits the offsets of every partition: at 1,500 msg/s, 10 s instead of faust's 2.8 s cut
    # the worker's CPU by 7-8 % of a core (bench/pipeline_bench.py). Alerts do not wait for it;
    # a crash replays up to this much of the stream (alerts come again with the same ids).
    # At least 0.1 s: a commit per event loop turn would leave the worker busy committing.
    streams_commit_seconds: float = Field(10.0, ge=0.1, le=300, description=(
        "how often the streams worker commits its offsets and writes its states back"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    state_dir: Path = Field(
        PROJECT_ROOT / ".stack", description="data and logs of the local stack and embedded stores"
    )
    kafka: KafkaSettings = KafkaSettings()
    mqtt: MqttSettings = MqttSettings()
    mqtt_anonymous: bool = Field(
        False, description="local stack only: no MQTT authentication or ACL, anyone may do "
        "anything, for experiments (takes effect at the broker's next start)")
    clickhouse_url: str = Field(
        "", description="clickhouse://host:9000/db or chdb:///path; empty = chDB in state_dir"
    )
    clickhouse_ttl_days: int | None = Field(
        None, ge=1, description="drop analytics rows older than this (servers >= 20.1, chDB)")
    query_port: int = Field(8124, ge=1, le=65535,
                            description="127.0.0.1 port where the sink answers SQL for chDB")
    ledger_url: str = Field("", description="file://PATH or evm+http://host:8545; empty = file")
    ledger_key: SecretStr | None = Field(None, description="EVM signing key (hex); never logged")
    ledger_key_file: Path | None = Field(None, description="file holding the EVM signing key")
    ledger_confirmations: int = Field(1, ge=1, description="EVM blocks to wait for")
    ledger_finality: Literal["confirmations", "finalized"] = Field(
        "confirmations", description="EVM: wait for ledger_confirmations blocks, or for the "
        "chain's `finalized` block (proof-of-stake chains; anvil mines no blocks on its own)")
    ledger_witness_url: str = Field(
        "", description="evm+http://host:8545: witness the file ledger's checkpoints on this "
        "chain, signed with ledger_key (or ledger_key_file); empty = no witness")
    ledger_witness_seconds: float = Field(
        3600.0, gt=0, description="the anchorer witnesses a grown file ledger this often")
    trusted_ledgers: tuple[str, ...] = Field(
        (), description="ledger ids `smartport verify` accepts: file key fingerprints, "
        "eip155:<chain>:<address> accounts")
    terminal_key_file: Path | None = Field(
        None, description="the terminal's Ed25519 key (PEM) that signs discharge certificates; "
        "empty = STATE_DIR/keys/terminal.key, made on first use")
    trusted_terminals: tuple[str, ...] = Field(
        (), description="terminal key ids `smartport verify` accepts on certificates")
    anchor_hash: HashAlgorithm = "blake3"
    anchor_topics: tuple[str, ...] = Field(
        ("telemetry.v1", "transit.certificates.v1", "dcsa.events.v1"),
        description="topics the anchorer batches (alerts, declarations too)")
    batches: BatchSettings = BatchSettings()
    max_payload_bytes: int = Field(
        64 * 1024, ge=256, le=256 * 1024,
        description="larger MQTT payloads go to the DLQ (at most 256 KiB: a reading's Kafka "
        "record must stay within Kafka's 1 MiB)")
    ts_not_before: AwareDatetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC), description="readings stamped earlier go to the DLQ")
    ts_max_ahead_s: float = Field(
        600.0, ge=0, description="readings stamped further ahead of the gateway's clock go to "
        "the DLQ; old readings are kept (trackers upload what they buffered at sea)")

    @property
    def resolved_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{self.state_dir / 'chdb'}"

    @property
    def query_token_file(self) -> Path:
        """The token analysts send to the sink's query server (0600, made by the sink)."""
        return self.state_dir / "query.token"

    @property
    def resolved_terminal_key_file(self) -> Path:
        return self.terminal_key_file or self.state_dir / "keys" / "terminal.key"

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"file://{self.state_dir / 'ledger'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment(os.environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = settings_cls.model_config.get("toml_file") or os.environ.get(CONFIG_ENV)
        if config_file:
            path = Path(str(config_file))
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def environment_names() -> set[str]:
    """Every ``SMARTPORT_`` variable that names a setting (a section's too, given as JSON)."""
    names = {CONFIG_ENV}
    for name, field in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{name}".upper())
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names.update(f"{ENV_PREFIX}{name}__{key}".upper() for key in section.model_fields)
    return names


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ValueError naming each ``SMARTPORT_`` variable that names no setting (pydantic-
    settings reads only the names it knows, so a misspelt one would pass unnoticed)."""
    known = environment_names()
    unknown = sorted(name for name in environ
                     if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ValueError(f"unknown setting in the environment: {', '.join(hints)}; unset it or "
                         "correct its name (README, Configuration, lists every setting)")


def load_settings(config_file: Path | None = None) -> Settings:
    """Settings from the environment and a TOML file (``config_file``, else $SMARTPORT_CONFIG)."""
    if config_file is None:
        return Settings()

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})

    return FileSettings()
