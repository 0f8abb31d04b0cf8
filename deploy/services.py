"""The services of the local stack: how each is configured, started and health-checked."""

from __future__ import annotations

import base64
import getpass
import json
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from string import Template

from pydantic import TypeAdapter, ValidationError

from deploy import install
from deploy.process import port_open, read_pid
from deploy.tls import ensure_tls
from schemas.base import describe_validation_error
from schemas.identifiers import DeviceId, UnLocode
from schemas.telemetry import DEVICE_KINDS
from schemas.topics import mqtt_telemetry_topic
from smartport.errors import ConfigError, StackError
from smartport.files import write_new
from smartport.settings import KafkaSettings

HOST = "127.0.0.1"
KAFKA_PORT = 9092
MQTT_PORT = 1883
KAFKA_SECURE_PORT_OFFSET = 100  # a node's SASL_SSL listener: 9192 for the single node
MQTT_AUTH_PORT = 1884
MQTT_TLS_PORT = 8883
CLICKHOUSE_PORT = 9000
CLICKHOUSE_HTTP_PORT = 8123
ANVIL_PORT = 8545
ANVIL_CHAIN_ID = 31337
# The first account of anvil's public development mnemonic ("test test ... junk"): a key
# everybody knows, for the local chain only. Written to .stack/anvil/dev.key for the EVM ledger.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
GATEWAY_MQTT_USER = "smartport-gateway"
STREAMS_MQTT_USER = "smartport-streams"
# The role users of the authenticated listener (deploy/mosquitto/acl).
ROLE_USERS = (GATEWAY_MQTT_USER, STREAMS_MQTT_USER, "customs-officer")


def render(template: Path, target: Path, **values: object) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(Template(template.read_text()).substitute(values))
    return target


class Service:
    """One service of the stack. Subclasses say how to install, prepare, start and probe it."""

    name: str
    port: int
    start_timeout = 60.0

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.out.log"

    @property
    def pid_path(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    def install(self) -> None:
        """Fetch what is missing (Debian packages are installed once for all services)."""

    def prepare(self) -> list[str]:
        """Write configuration and initialise storage; returns the command that runs it."""
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError


class Kafka(Service):
    """One KRaft node (broker and controller). Alone it is ``kafka`` on 9092; in a loopback
    cluster of ``brokers`` nodes, node i is ``kafka-i`` on 9092 + 2(i - 1), its controller
    listener one port up."""

    start_timeout = 90.0

    def __init__(self, state_dir: Path, partitions: int, node_id: int = 1,
                 brokers: int = 1) -> None:
        super().__init__(state_dir)
        self.partitions = partitions
        self.node_id = node_id
        self.brokers = brokers
        self.name = "kafka" if brokers == 1 else f"kafka-{node_id}"
        self.port = kafka_port(node_id)

    @property
    def libs(self) -> Path:
        return self.state_dir / "kafka" / "libs"  # one copy of the jars for every node

    @property
    def data(self) -> Path:
        return self.home / "data"

    def install(self) -> None:
        install.ensure_kafka_jars(self.libs)

    def _cluster_id(self) -> str:
        """The id the node's storage is formatted with; a cluster's nodes share one, kept in
        ``kafka/cluster-of-N.id``."""
        meta = self.data / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1]
        shared = self.state_dir / "kafka" / f"cluster-of-{self.brokers}.id"
        if self.brokers > 1 and shared.is_file():
            return shared.read_text().strip()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if self.brokers > 1:
            shared.parent.mkdir(parents=True, exist_ok=True)
            shared.write_text(cluster_id)
        return cluster_id

    def prepare(self) -> list[str]:
        if shutil.which("java") is None:
            raise StackError("Java 17+ is needed to run Kafka: apt-get install -y openjdk-17-jre")
        voters = ",".join(f"{i}@{HOST}:{kafka_port(i) + 1}" for i in range(1, self.brokers + 1))
        properties = render(
            install.DEPLOY_DIR / "kafka" / "server.properties",
            self.home / "server.properties",
            node_id=self.node_id, voters=voters, port=self.port,
            controller_port=self.port + 1, data_dir=self.data, partitions=self.partitions,
            replication=min(3, self.brokers), min_insync=2 if self.brokers >= 3 else 1,
            secure_port=self.port + KAFKA_SECURE_PORT_OFFSET,
            sasl_password=kafka_sasl_password(self.state_dir),
            keystore=ensure_tls(self.state_dir / "tls").server,
        )
        properties.chmod(0o600)  # it holds the SASL password
        log4j = render(
            install.DEPLOY_DIR / "kafka" / "log4j.properties",
            self.home / "log4j.properties",
            log_file=self.home / "server.log",
        )
        java = ["java", "-cp", f"{self.libs}/*", f"-Dlog4j.configuration=file:{log4j}"]
        if not (self.data / "meta.properties").is_file():
            # KRaft storage is formatted once; -g ignores directories already formatted.
            result = subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "-t", self._cluster_id(),
                 "-c", str(properties), "-g"],
                capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage in {self.data} failed:\n"
                                 f"{result.stderr}")
        heap = "-Xmx1g" if self.brokers == 1 else "-Xmx512m"
        return [*java[:1], "-Xms256m", heap, "-XX:+UseG1GC", *java[1:],
                "kafka.Kafka", str(properties)]

    def healthy(self) -> bool:
        """Answers metadata as a registered broker of our own cluster (a broker of another
        cluster on the same port is not this node)."""
        if not port_open(HOST, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.endpoint, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception:
            return False
        if self.node_id not in metadata.brokers:
            return False
        meta = self.data / "meta.properties"
        return not meta.is_file() or f"cluster.id={metadata.cluster_id}" in meta.read_text()


def kafka_sasl_password(state_dir: Path) -> str:
    """The password of the SASL_SSL listener's user `smartport`, made once (0600)."""
    path = state_dir / "kafka" / "sasl.password"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new(path, uuid.uuid4().hex.encode(), mode=0o600)
    return path.read_text().strip()


def kafka_port(node_id: int) -> int:
    return KAFKA_PORT + 2 * (node_id - 1)


class Mosquitto(Service):
    name = "mosquitto"
    port = MQTT_PORT
    start_timeout = 20.0

    @property
    def password_file(self) -> Path:
        return self.home / "passwd"

    def password_file_of(self, role_user: str) -> Path:
        """Where the stack keeps a role user's password (0600), for its processes to read."""
        return self.home / f"{role_user}.password"

    @property
    def acl_file(self) -> Path:
        return self.home / "acl"

    @property
    def devices_file(self) -> Path:
        """Each device's port and kind, from which its ACL line is written."""
        return self.home / "devices.json"

    def _devices(self) -> dict[str, dict[str, str]]:
        try:
            devices: dict[str, dict[str, str]] = json.loads(self.devices_file.read_text())
        except FileNotFoundError:
            return {}
        return devices

    def _write_acl(self) -> None:
        """The role lines, then one line per device: it may publish only its own telemetry
        topic, with its port and kind bound as well as its id."""
        lines = [(install.DEPLOY_DIR / "mosquitto" / "acl").read_text()]
        for device, where in sorted(self._devices().items()):
            lines.append(f"user {device}\ntopic write "
                         f"{mqtt_telemetry_topic(where['port'], where['kind'], device)}\n")
        write_new(self.acl_file, "\n".join(lines).encode(), mode=0o600)

    def prepare(self) -> list[str]:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        acl = self.acl_file
        self._write_acl()
        tls = ensure_tls(self.state_dir / "tls")
        if not self.password_file.is_file():
            self.password_file.touch(mode=0o600)
        for role_user in (GATEWAY_MQTT_USER, STREAMS_MQTT_USER):
            if not self.password_file_of(role_user).is_file():
                self.add_user(role_user, uuid.uuid4().hex, reload=False)
        config = render(
            install.DEPLOY_DIR / "mosquitto" / "mosquitto.conf",
            self.home / "mosquitto.conf",
            user=getpass.getuser(), data_dir=data, log_file=self.home / "mosquitto.log",
            port=self.port, auth_port=MQTT_AUTH_PORT, password_file=self.password_file,
            acl_file=acl, tls_port=MQTT_TLS_PORT, tls_ca=tls.ca, tls_cert=tls.chain,
            tls_key=tls.key,
        )
        return ["mosquitto", "-c", str(config)]

    def add_device(self, device_id: str, password: str, *, port: str, kind: str) -> None:
        """A device of the authenticated listener: it may publish only
        port/<port>/<kind>/<device_id>/telemetry."""
        try:
            TypeAdapter(DeviceId).validate_python(device_id)
            TypeAdapter(UnLocode).validate_python(port)
        except ValidationError as exc:
            raise ConfigError(f"device {device_id!r} at port {port!r}: "
                              f"{describe_validation_error(exc)}") from None
        if kind not in DEVICE_KINDS or device_id in ROLE_USERS:
            raise ConfigError(f"device {device_id!r}: its kind must be one of "
                              f"{', '.join(DEVICE_KINDS)}, and its id not a role's user name")
        devices = self._devices()
        devices[device_id] = {"port": port, "kind": kind}
        write_new(self.devices_file, json.dumps(devices, indent=1).encode(), mode=0o600)
        self._write_acl()
        self.add_user(device_id, password)

    def add_user(self, username: str, password: str, reload: bool = True) -> None:
        """Add or replace an MQTT user of the authenticated listener; SIGHUP reloads the broker."""
        if not password or any(c in password for c in "\r\n\0"):
            raise ConfigError("an MQTT password must be one line of text, not empty")
        # On stdin (as typed at its prompt), never on a command line that `ps` shows.
        result = subprocess.run(
            ["mosquitto_passwd", str(self.password_file), username],
            input=f"{password}\n{password}\n", capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"mosquitto_passwd failed for {username!r}: {result.stderr.strip()}")
        if username in ROLE_USERS:
            write_new(self.password_file_of(username), password.encode(), mode=0o600)
        pid = read_pid(self.pid_path) if reload else None
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def healthy(self) -> bool:
        if not port_open(HOST, self.port):
            return False
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        try:
            client.connect(HOST, self.port, keepalive=5)
            client.disconnect()
        except OSError:
            return False
        return True


class ClickHouse(Service):
    name = "clickhouse"
    port = CLICKHOUSE_PORT

    def prepare(self) -> list[str]:
        for sub in ("data", "data/tmp", "data/user_files", "log"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        config = render(
            install.DEPLOY_DIR / "clickhouse" / "config.xml",
            self.home / "config.xml",
            log_dir=self.home / "log", port=self.port, http_port=CLICKHOUSE_HTTP_PORT,
            data_dir=self.home / "data",
        )
        shutil.copyfile(install.DEPLOY_DIR / "clickhouse" / "users.xml", self.home / "users.xml")
        return ["clickhouse-server", f"--config-file={config}"]

    def healthy(self) -> bool:
        if not port_open(HOST, self.port):
            return False
        from clickhouse_driver import Client

        try:
            return bool(Client(HOST, port=self.port, connect_timeout=2).execute("SELECT 1"))
        except Exception:
            return False


class Anvil(Service):
    name = "anvil"
    port = ANVIL_PORT
    start_timeout = 30.0

    def install(self) -> None:
        install.ensure_anvil(self.home / "npm")
        self.dev_key_file.write_text(ANVIL_DEV_KEY + "\n")
        self.dev_key_file.chmod(0o600)

    @property
    def dev_key_file(self) -> Path:
        return self.home / "dev.key"

    def prepare(self) -> list[str]:
        binary = install.ensure_anvil(self.home / "npm")
        return [str(binary), "--host", HOST, "--port", str(self.port),
                "--chain-id", str(ANVIL_CHAIN_ID), "--silent"]

    def healthy(self) -> bool:
        return chain_id(f"http://{self.endpoint}") == ANVIL_CHAIN_ID


def chain_id(rpc_url: str) -> int | None:
    """``eth_chainId`` of a JSON-RPC node, or None when it does not answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(json.load(response)["result"], 16)
    except (OSError, ValueError, KeyError):
        return None


def kafka_nodes(state_dir: Path, kafka: KafkaSettings) -> list[Kafka]:
    return [Kafka(state_dir, kafka.partitions, node_id, kafka.brokers)
            for node_id in range(1, kafka.brokers + 1)]


def all_services(state_dir: Path, kafka: KafkaSettings) -> list[Service]:
    return [*kafka_nodes(state_dir, kafka), Mosquitto(state_dir), ClickHouse(state_dir),
            Anvil(state_dir)]
