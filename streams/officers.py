"""`smartport alerts ack|close`: a customs officer acknowledges or closes an open alert.

The command goes to customs.alert-commands.v1 keyed by the container, so the streams worker
that holds the container's state applies it and publishes the resulting alert event (who, why,
when) like any other; this waits for that event, so the officer knows it took effect.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import Producer
from pydantic import ValidationError

from schemas import Alert, AlertCommand, AlertState, encode, topics
from schemas.base import describe_validation_error
from smartport.errors import InputRejected, StackError
from smartport.kafka import high_watermarks, produce, producer_config, read_range
from smartport.settings import Settings

Action = Literal["acknowledge", "close"]
ENDED = (AlertState.CLEARED, AlertState.CLOSED)
DONE = {"acknowledge": AlertState.ACKNOWLEDGED, "close": AlertState.CLOSED}


def _history(settings: Settings, alert_id: str) -> list[Alert]:
    """The events of one alert on customs.alerts.v1, in order."""
    events = []
    for message in read_range(settings.kafka, topics.ALERTS, {}):
        try:
            alert = Alert.model_validate_json(message.value() or b"")
        except ValidationError:
            continue
        if alert.alert_id == alert_id:
            events.append(alert)
    return sorted(events, key=lambda a: a.version)


def send(settings: Settings, alert_id: str, action: Action, *, officer: str, reason: str,
         timeout: float = 60.0) -> Alert:
    """Send the command and return the alert event that records it. Raises InputRejected when
    the alert is not open or the command is malformed, StackError when no worker confirms."""
    history = _history(settings, alert_id)
    if not history:
        raise InputRejected(f"no alert {alert_id!r} on {topics.ALERTS}: give an alert id as "
                            "the alerts show it, <container>/<rule>/<incident>")
    latest = history[-1]
    if latest.state in ENDED:
        raise InputRejected(f"alert {alert_id} is already {latest.state.value}")
    raised = next((a for a in history if a.state == AlertState.RAISED), history[0])
    try:
        order = AlertCommand(
            alert_id=alert_id, container_no=latest.container_no, port=latest.port,
            raised_by=raised.evidence[0].reading_id if raised.evidence else None,
            action=action, officer=officer, reason=reason, at=datetime.now(UTC))
    except ValidationError as exc:
        raise InputRejected(f"the command is not valid: {describe_validation_error(exc)}") \
            from None
    since = high_watermarks(settings.kafka, topics.ALERTS)
    producer = Producer(producer_config(settings.kafka, "smartport-officer"))
    produce(producer, topics.ALERT_COMMANDS, order.container_no.encode(), encode(order))
    if producer.flush(30) > 0:
        raise StackError(f"Kafka did not take the command for {alert_id} within 30 s")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in read_range(settings.kafka, topics.ALERTS, since):
            since[message.partition() or 0] = (message.offset() or 0) + 1
            try:
                alert = Alert.model_validate_json(message.value() or b"")
            except ValidationError:
                continue
            if (alert.alert_id, alert.state, alert.officer) == (alert_id, DONE[action],
                                                                 officer):
                return alert
        time.sleep(0.5)
    raise StackError(f"no streams worker confirmed the command for {alert_id} within "
                     f"{timeout:.0f} s: is `smartport streams` running? (the command is kept "
                     f"on {topics.ALERT_COMMANDS} and applies when a worker starts)")
