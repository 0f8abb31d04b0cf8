"""The services of the local stack: how each is configured, started and health-checked."""

from __future__ import annotations

import base64
import getpass
import json
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path
from string import Template

from pydantic import TypeAdapter, ValidationError

from deploy import install
from deploy.mqtt_access import (
    ADMIN_USER,
    EDGE_KIND,
    ROLE_ACLS,
    AccessControl,
    admin_only_control,
    publisher_acls,
)
from deploy.process import port_open
from deploy.tls import ensure_tls
from ingest.fleet import HOME_PORT
from ingest.linked import LINKED_PORT
from schemas.base import describe_validation_error
from schemas.identifiers import DeviceId, UnLocode
from schemas.telemetry import DEVICE_KINDS
from smartport.errors import ConfigError, StackError
from smartport.files import write_new
from smartport.mqtt import ROLE_USERS, edge_user, role_password_file
from smartport.settings import KafkaSettings

HOST = "127.0.0.1"
KAFKA_PORT = 9092
MQTT_PORT = 1883
KAFKA_SECURE_PORT_OFFSET = 100  # a node's SASL_SSL listener: 9192 for the single node
MQTT_TLS_PORT = 8883
CLICKHOUSE_PORT = 9000
CLICKHOUSE_HTTP_PORT = 8123
ANVIL_PORT = 8545
ANVIL_CHAIN_ID = 31337
# The first account of anvil's public development mnemonic ("test test ... junk"): a key
# everybody knows, for the local chain only. Written to .stack/anvil/dev.key for the EVM ledger.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


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

    def provision(self) -> None:
        """Make what the running service needs (users, ...); idempotent."""

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
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: not read as an option
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
                [*java, "kafka.tools.StorageTool", "format",
                 f"--cluster-id={self._cluster_id()}", "-c", str(properties), "-g"],
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

    def __init__(self, state_dir: Path, anonymous: bool = False) -> None:
        super().__init__(state_dir)
        self.anonymous = anonymous  # no authentication at all: local experiments only

    @property
    def access_file(self) -> Path:
        """The dynamic-security plugin's users and roles (it rewrites the file on each change)."""
        return self.home / "dynamic-security.json"

    def password_file_of(self, user: str) -> Path:
        """Where the stack keeps a role's or an edge gateway's password (0600), for its
        processes to read."""
        return role_password_file(self.state_dir, user)

    def prepare(self) -> list[str]:
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        tls = ensure_tls(self.state_dir / "tls")
        if not self.access_file.is_file():
            self._init_access()
        access = ("allow_anonymous true" if self.anonymous else
                  f"allow_anonymous false\nplugin {_dynamic_security_plugin()}\n"
                  f"plugin_opt_config_file {self.access_file}")
        config = render(
            install.DEPLOY_DIR / "mosquitto" / "mosquitto.conf",
            self.home / "mosquitto.conf",
            user=getpass.getuser(), data_dir=data, log_file=self.home / "mosquitto.log",
            port=self.port, access=access, tls_port=MQTT_TLS_PORT, tls_ca=tls.ca,
            tls_cert=tls.chain, tls_key=tls.key,
        )
        return ["mosquitto", "-c", str(config)]

    def _init_access(self) -> None:
        """The plugin's first configuration: its admin only (`mosquitto_ctrl dynsec init`,
        the password on stdin), cut down to the control topic."""
        password = uuid.uuid4().hex
        result = subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(self.access_file), ADMIN_USER],
            input=f"{password}\n{password}\n", capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"mosquitto_ctrl dynsec init failed: {result.stderr.strip()}")
        config = admin_only_control(json.loads(self.access_file.read_text()))
        write_new(self.access_file, json.dumps(config, indent=1).encode(), mode=0o600)
        write_new(self.password_file_of(ADMIN_USER), password.encode(), mode=0o600)

    def provision(self) -> None:
        """The stack's own users, once: the three roles and the edge gateways of the two
        simulated ports (Shekou and, linked to it, Shunde), each with a password kept for our
        processes (0600)."""
        if self.anonymous:
            return
        wanted = {**ROLE_ACLS, **{edge_user(port): publisher_acls(
            edge_user(port), port=port, kind=EDGE_KIND) for port in (HOME_PORT, LINKED_PORT)}}
        for user, acls in wanted.items():
            kept = self.password_file_of(user)
            password = kept.read_text() if kept.is_file() else uuid.uuid4().hex
            self._access().ensure_user(user, password, acls, replace=not kept.is_file())
            if not kept.is_file():
                write_new(kept, password.encode(), mode=0o600)

    def _access(self) -> AccessControl:
        try:
            admin_password = self.password_file_of(ADMIN_USER).read_text()
        except FileNotFoundError:
            raise StackError(f"{self.password_file_of(ADMIN_USER)} is missing: the running MQTT "
                             "broker was started without access control (an older stack?); "
                             "restart it: `smartport stack down`, then `smartport stack up`"
                             ) from None
        return AccessControl(HOST, self.port, admin_password)

    def add_device(self, device_id: str, password: str, *, port: str, kind: str) -> None:
        """A device, which may publish only port/<port>/<kind>/<device_id>/telemetry, or (kind
        ``edge``, user edge-<port>) a port's edge gateway, which publishes for its devices."""
        try:
            TypeAdapter(UnLocode).validate_python(port)
            if kind != EDGE_KIND:
                TypeAdapter(DeviceId).validate_python(device_id)
        except ValidationError as exc:
            raise ConfigError(f"device {device_id!r} at port {port!r}: "
                              f"{describe_validation_error(exc)}") from None
        if kind == EDGE_KIND and device_id != edge_user(port):
            raise ConfigError(f"the edge gateway of {port} is user {edge_user(port)!r}, "
                              f"not {device_id!r}")
        if kind not in (*DEVICE_KINDS, EDGE_KIND) or device_id in (*ROLE_USERS, ADMIN_USER) or (
                kind != EDGE_KIND and device_id.startswith("edge-")):
            raise ConfigError(f"device {device_id!r}: its kind must be one of "
                              f"{', '.join((*DEVICE_KINDS, EDGE_KIND))}, and its id neither a "
                              "role's user name nor edge-…")
        self._check_password(password)
        self._access().ensure_user(device_id, password,
                                   publisher_acls(device_id, port=port, kind=kind), replace=True)
        if kind == EDGE_KIND:
            write_new(self.password_file_of(device_id), password.encode(), mode=0o600)

    def add_user(self, username: str, password: str) -> None:
        """Give a role user (deploy/mqtt_access.py) a new password."""
        if username not in ROLE_ACLS:
            raise ConfigError(f"{username!r} is not a role: {', '.join(ROLE_ACLS)}")
        self._check_password(password)
        self._access().ensure_user(username, password, ROLE_ACLS[username], replace=True)
        write_new(self.password_file_of(username), password.encode(), mode=0o600)

    @staticmethod
    def _check_password(password: str) -> None:
        if not password or any(c in password for c in "\r\n\0"):
            raise ConfigError("an MQTT password must be one line of text, not empty")

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


def _dynamic_security_plugin() -> Path:
    """Mosquitto's dynamic-security plugin, shipped in Debian's mosquitto package."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")) + sorted(
        Path("/usr/lib").glob("mosquitto_dynamic_security.so"))
    if not found:
        raise StackError("mosquitto_dynamic_security.so is missing: reinstall Debian's "
                         "mosquitto package (`apt-get install --reinstall mosquitto`)")
    return found[0]


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


def all_services(state_dir: Path, kafka: KafkaSettings, mqtt_anonymous: bool = False
                 ) -> list[Service]:
    return [*kafka_nodes(state_dir, kafka), Mosquitto(state_dir, mqtt_anonymous),
            ClickHouse(state_dir), Anvil(state_dir)]
