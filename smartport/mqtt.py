"""MQTT client construction from settings (credentials, TLS, MQTT v5), and the roles the
broker's ACL knows (deploy/mqtt_access.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypeVar, overload

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from smartport.settings import MqttSettings, Settings

GATEWAY_USER = "smartport-gateway"  # reads all telemetry, publishes nothing
STREAMS_USER = "smartport-streams"  # publishes field alerts
OFFICER_USER = "customs-officer"  # reads field alerts
ROLE_USERS = (GATEWAY_USER, STREAMS_USER, OFFICER_USER)

ClientT = TypeVar("ClientT", bound=mqtt.Client)


def edge_user(port: str) -> str:
    """The user of a port's edge gateway (a Sparkplug edge node, a LoRaWAN network server, the
    simulator): it publishes the telemetry of every device at that port, and nothing else."""
    return f"edge-{port.lower()}"


def role_password_file(state_dir: Path, user: str) -> Path:
    """Where the local stack keeps the password of one of its MQTT users (0600)."""
    return state_dir / "mosquitto" / f"{user}.password"


def mqtt_as(settings: Settings, user: str) -> MqttSettings:
    """The MQTT settings of a process acting as ``user``: credentials in the settings win;
    otherwise the local stack's password for that user, when it has made one."""
    if settings.mqtt.username:
        return settings.mqtt
    try:
        password = role_password_file(settings.state_dir, user).read_text()
    except FileNotFoundError:
        return settings.mqtt
    return settings.mqtt.model_copy(update={"username": user, "password": SecretStr(password)})


@overload
def new_client(settings: MqttSettings, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    ...


@overload
def new_client(settings: MqttSettings, client_id: str, manual_ack: bool = False, *,
               client_class: type[ClientT]) -> ClientT:
    ...


def new_client(settings: MqttSettings, client_id: str, manual_ack: bool = False, *,
               client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A client of ``client_class`` (paho's, or a subclass of it) configured from settings."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(ca_certs=str(settings.tls_ca) if settings.tls_ca else None)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def connect_properties(*, session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    """MQTT v5 CONNECT properties: how long the broker keeps the session, the in-flight window."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def forget_session(settings: Settings, client_id: str) -> None:
    """Delete the broker's persistent session of ``client_id`` (a gateway of a test or a bench
    that will not come back: the broker would otherwise queue every message for it)."""
    client = new_client(mqtt_as(settings, GATEWAY_USER), client_id)
    client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True,
                   properties=connect_properties(session_expiry_s=0))
    client.loop_start()
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()
