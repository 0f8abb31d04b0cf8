"""Who may do what on the stack's MQTT broker: the roles' ACLs, the broker's configuration, and
which user each of our processes logs in as."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from deploy.mqtt_access import EDGE_KIND, ROLE_ACLS, admin_only_control, publisher_acls
from deploy.services import Mosquitto
from smartport.mqtt import GATEWAY_USER, STREAMS_USER, edge_user, mqtt_as, role_password_file
from smartport.settings import MqttSettings, Settings


def _topics(acls: list[dict[str, object]], acltype: str) -> set[object]:
    return {acl["topic"] for acl in acls if acl["acltype"] == acltype and acl["allow"]}


def test_each_role_may_do_one_thing() -> None:
    gateway, streams = ROLE_ACLS[GATEWAY_USER], ROLE_ACLS[STREAMS_USER]
    assert _topics(gateway, "publishClientSend") == set()
    assert _topics(gateway, "subscribePattern") == {
        "port/+/+/+/telemetry", "$share/+/port/+/+/+/telemetry"}
    assert _topics(streams, "subscribePattern") == set()
    assert _topics(streams, "publishClientSend") == {"port/+/alerts/#"}


def test_a_device_publishes_its_own_topic_an_edge_its_ports() -> None:
    assert publisher_acls("trk-1", port="CNSHK", kind="container") == [
        {"acltype": "publishClientSend", "topic": "port/CNSHK/container/trk-1/telemetry",
         "allow": True}]
    assert _topics(publisher_acls("edge-cnszx", port="CNSZX", kind=EDGE_KIND),
                   "publishClientSend") == {"port/CNSZX/+/+/telemetry"}


def test_the_admin_keeps_only_the_control_topic() -> None:
    initial = {"roles": [{"rolename": "admin", "acls": [
        {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "#", "allow": True},
        {"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": True}]}]}
    assert _topics(admin_only_control(initial)["roles"][0]["acls"], "subscribePattern") == {
        "$CONTROL/dynamic-security/#"}


def test_the_broker_authenticates_unless_told_otherwise(tmp_path: Path) -> None:
    secure = (tmp_path / "secure" / "mosquitto" / "mosquitto.conf")
    Mosquitto(tmp_path / "secure").prepare()
    config = secure.read_text()
    assert "allow_anonymous false" in config
    assert "mosquitto_dynamic_security.so" in config
    assert "allow_anonymous true" not in config
    access = json.loads((tmp_path / "secure" / "mosquitto" / "dynamic-security.json").read_text())
    assert access["defaultACLAccess"]["subscribe"] is False
    assert access["defaultACLAccess"]["publishClientSend"] is False
    assert role_password_file(tmp_path / "secure", "smartport-admin").stat().st_mode & 0o077 == 0

    Mosquitto(tmp_path / "open", anonymous=True).prepare()
    config = (tmp_path / "open" / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous true" in config
    assert "mosquitto_dynamic_security.so" not in config


def test_a_process_logs_in_as_its_stack_user_unless_the_settings_name_one(
        tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert mqtt_as(settings, GATEWAY_USER).username is None  # no stack user made yet
    role_password_file(tmp_path, edge_user("CNSHK")).parent.mkdir(parents=True)
    role_password_file(tmp_path, edge_user("CNSHK")).write_text("s3cret")
    edge = mqtt_as(settings, edge_user("CNSHK"))
    assert (edge.username, edge.password) == ("edge-cnshk", SecretStr("s3cret"))
    named = Settings(state_dir=tmp_path, mqtt=MqttSettings(username="site-gw",
                                                            password=SecretStr("x")))
    assert mqtt_as(named, edge_user("CNSHK")).username == "site-gw"
