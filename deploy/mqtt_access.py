"""Who may do what on the local stack's MQTT broker, enforced by Mosquitto's dynamic-security
plugin and changed through its control topic while the broker runs.

Not an ``acl_file``: Mosquitto checks an acl_file only when it delivers, never when a client
subscribes, so any logged-in device could join the gateways' ``$share`` group and the broker
would then drop, unread, the share of telemetry it routed to that member — acknowledged to the
device that sent it, and lost. The plugin refuses the SUBSCRIBE itself (reason 0x87).

Every user has one role of the same name holding its ACLs:

- a device publishes its own telemetry topic only (port, kind and id bound);
- ``edge-<locode>``, a port's edge gateway, publishes the telemetry of any device at its port;
- ``smartport-gateway`` subscribes to telemetry (plainly or through ``$share``);
- ``smartport-streams`` publishes field alerts; ``customs-officer`` subscribes to them.

Nothing else is allowed: the plugin's defaults deny every publish and subscription.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schemas.topics import MQTT_TELEMETRY_FILTER, mqtt_telemetry_topic
from smartport.errors import StackError
from smartport.mqtt import GATEWAY_USER, OFFICER_USER, STREAMS_USER

ADMIN_USER = "smartport-admin"  # may only use the control topic
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
EDGE_KIND = "edge"  # `stack mqtt-user edge-<locode> --port LOCODE --kind edge`
ALERTS_FILTER = "port/+/alerts/#"
_TIMEOUT_S = 10.0

Acl = dict[str, Any]


def _allow(acltype: str, topic: str) -> Acl:
    return {"acltype": acltype, "topic": topic, "allow": True}


ROLE_ACLS: dict[str, list[Acl]] = {
    GATEWAY_USER: [_allow("subscribePattern", MQTT_TELEMETRY_FILTER),
                   _allow("subscribePattern", f"$share/+/{MQTT_TELEMETRY_FILTER}")],
    STREAMS_USER: [_allow("publishClientSend", ALERTS_FILTER)],
    OFFICER_USER: [_allow("subscribePattern", ALERTS_FILTER)],
}


def publisher_acls(user: str, *, port: str, kind: str) -> list[Acl]:
    """A device's one telemetry topic, or (kind ``edge``) every telemetry topic of its port."""
    if kind == EDGE_KIND:
        return [_allow("publishClientSend", mqtt_telemetry_topic(port, "+", "+"))]
    return [_allow("publishClientSend", mqtt_telemetry_topic(port, kind, user))]


def admin_only_control(config: dict[str, Any]) -> dict[str, Any]:
    """The plugin's initial configuration with the admin role cut down to the control topic
    (`mosquitto_ctrl dynsec init` also lets it read every topic)."""
    for role in config.get("roles", []):
        role["acls"] = [acl for acl in role.get("acls", [])
                        if acl.get("topic", "").startswith("$CONTROL/")]
    return config


class AccessControl:
    """The broker's users and roles, changed over its control topic as ``smartport-admin``."""

    def __init__(self, host: str, port: int, admin_password: str) -> None:
        self._host, self._port, self._password = host, port, admin_password

    def ensure_user(self, username: str, password: str, acls: list[Acl], *,
                    replace: bool) -> None:
        """Create ``username`` with its role. An existing user keeps its role and password
        unless ``replace``: then its ACLs become ``acls`` and its password ``password``
        (its open connections stay up)."""
        commands: list[dict[str, Any]] = (
            [{"command": "deleteRole", "rolename": username}] if replace else [])
        commands += [
            {"command": "createRole", "rolename": username, "acls": acls},
            {"command": "createClient", "username": username, "password": password,
             "roles": [{"rolename": username}]},
        ]
        responses = self._run(commands)
        if replace and "already exists" in responses[-1].get("error", ""):
            self._run([{"command": "modifyClient", "username": username, "password": password,
                        "roles": [{"rolename": username}]}])

    def _run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in one control message; their responses. "not found" (deleting
        what is not there) and "already exists" are outcomes, anything else an error."""
        response: list[dict[str, Any]] = []
        answered = threading.Event()

        def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            response.extend(json.loads(message.payload).get("responses", []))
            answered.set()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"admin-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(ADMIN_USER, self._password)
        client.on_message = on_message
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        try:
            client.connect(self._host, self._port, keepalive=10)
        except OSError as exc:
            raise StackError(f"cannot reach the MQTT broker at {self._host}:{self._port} to "
                             f"change its users: {exc}; run `smartport stack up`") from exc
        client.loop_start()
        try:
            client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)
            if not subscribed.wait(_TIMEOUT_S):
                raise StackError("the MQTT broker did not let smartport-admin use its control "
                                 "topic: is it the stack's own broker? (`smartport stack status`)")
            client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            if not answered.wait(_TIMEOUT_S):
                raise StackError("the MQTT broker did not answer a user change within "
                                 f"{_TIMEOUT_S:.0f} s")
        finally:
            client.loop_stop()
            client.disconnect()
        for command, outcome in zip(commands, response, strict=False):
            error = outcome.get("error", "")
            if error and "not found" not in error and "already exists" not in error:
                raise StackError(f"the MQTT broker refused {command['command']} "
                                 f"{command.get('username') or command.get('rolename')}: {error}")
        return response
