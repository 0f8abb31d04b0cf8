"""The faust app on the real stack: simulator → Mosquitto → gateway → Kafka → streams → alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.cli import main
from deploy.pipeline import PipelineProcess, streams_worker
from deploy.topics import delete_app_topics
from ingest import declarations
from ingest.fleet import Fleet, FleetConfig, SimMessage
from ingest.records import envelope_value
from ingest.simulate import MqttPublisher, write_declarations
from ingest.validation import Accepted, Limits, classify
from schemas import Alert, topics
from smartport.kafka import high_watermarks, read_range
from smartport.settings import Settings
from streams.app import SESSION_TIMEOUT_S, STATE_TABLE
from streams.relay import relay_group, unjudged_readings
from tests.helpers import crane_reading
from tests.stack.pipeline import GatewayProcess, edge_mqtt, run_scratch_worker, unique, wait_for


@pytest.fixture
def app_id() -> str:
    return unique("streams-test")


def committing_every(seconds: float) -> dict[str, str]:
    """A worker's environment: it commits every ``seconds`` (batches.streams_commit_seconds)."""
    return {"SMARTPORT_BATCHES__STREAMS_COMMIT_SECONDS": str(seconds)}


# The crash and rebalance tests need commits before the kill or the join, with states changed
# since: their workers commit every 2 s instead of every 10 s.
COMMITTING_OFTEN = committing_every(2)


@pytest.fixture
def worker(stack: Settings, tmp_path: Path, app_id: str,
           request: pytest.FixtureRequest) -> Iterator[PipelineProcess]:
    """A streams worker, a static member of its groups; parametrized indirectly, the
    environment it runs with."""
    env: dict[str, str] = getattr(request, "param", {})
    started = streams_worker(app_id, tmp_path / "streams.log", env,
                             instance_id=f"{app_id}-1").start()
    yield started
    started.stop()


def _alerts(settings: Settings, since: dict[int, int], containers: set[str]) -> list[Alert]:
    found = []
    for message in read_range(settings.kafka, topics.ALERTS, since):
        alert = Alert.model_validate_json(message.value() or b"")
        if alert.container_no in containers:
            found.append(alert)
    return found


def _drive(stack: Settings, worker: PipelineProcess, tmp_path: Path, *, seed: int,
           kill_after: float | None = None, joining: PipelineProcess | None = None) -> None:
    """Fleet → MQTT → gateway → Kafka → worker; then check alerts against the ground truth.

    With ``kill_after``, the worker is SIGKILLed that many seconds in and restarted; a
    ``joining`` worker (same app id) is started 4 s in.
    """
    fleet = Fleet(FleetConfig(devices=60, seed=seed, anomaly_rate=0.03))
    write_declarations(fleet, tmp_path / "declarations.jsonl")
    declarations.load(stack, tmp_path / "declarations.jsonl")
    gateway = GatewayProcess(unique("gw"), unique("grp"), tmp_path).start()
    since = high_watermarks(stack.kafka, topics.ALERTS)
    messages = list(islice(fleet.messages(), 3000))
    truth = {(m.truth[0], m.truth[1].value) for m in messages if m.truth}
    assert len(truth) > 20
    containers = {d.container_no for d in fleet.declarations} | {c for c, _ in truth}

    def raised() -> set[tuple[str, str]]:
        return {(a.container_no, a.rule.value)
                for a in _alerts(stack, since, containers) if a.state.value == "raised"}

    def publish() -> None:
        publisher = MqttPublisher(edge_mqtt(stack))
        for index, message in enumerate(messages):
            publisher.publish(message.topic, message.payload)
            if index % 100 == 0:
                time.sleep(0.2)  # about 500 messages/s: the kill lands mid-stream
        publisher.close(len(messages))

    publishing = threading.Thread(target=publish)
    try:
        publishing.start()
        if kill_after is not None:
            time.sleep(kill_after)  # past the worker's first offset commit
            worker.kill()  # offsets, changelog and alerts in flight
            worker.start()
        if joining is not None:
            time.sleep(4.0)  # past the first worker's first commit, with states changed since
            joining.start()
        publishing.join()
        wait_for(lambda: truth <= raised(), 180, "an alert for every injected anomaly")
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    alerts = _alerts(stack, since, containers)
    assert raised() == truth  # precision and recall 100 %
    incidents = {a.alert_id for a in alerts if a.state.value == "raised"}
    assert len(incidents) == len(truth), "one incident per (container, rule)"
    for alert in alerts:
        assert alert.evidence
        assert alert.evidence[0].topic == topics.TELEMETRY


def test_every_injected_anomaly_gives_exactly_one_incident(
    stack: Settings, worker: PipelineProcess, tmp_path: Path, app_id: str
) -> None:
    _drive(stack, worker, tmp_path, seed=101)
    # Each container's state is written back once per commit, not once per reading: the run's
    # states are all written once the worker has committed every reading it judged.
    wait_for(lambda: unjudged_readings(stack.kafka, app_id, topics.TELEMETRY) == 0, 60,
             "the worker's commit of every reading")
    changelog = f"{app_id}-{STATE_TABLE}-changelog"
    written = sum(1 for _ in read_range(stack.kafka, changelog, {}))
    assert 0 < written < 3000 / 4, f"{written} state records for 3,000 readings"


@pytest.mark.parametrize("worker", [COMMITTING_OFTEN], indirect=True)
def test_sigkill_of_the_worker_loses_no_alert_and_duplicates_no_incident(
    stack: Settings, worker: PipelineProcess, tmp_path: Path
) -> None:
    _drive(stack, worker, tmp_path, seed=102, kill_after=4.0)


@pytest.mark.parametrize("worker", [COMMITTING_OFTEN], indirect=True)
def test_a_worker_joining_mid_stream_loses_no_alert_and_duplicates_no_incident(
    stack: Settings, worker: PipelineProcess, tmp_path: Path, app_id: str
) -> None:
    """Scaling out: the first worker's partitions are revoked while states of them are not
    written back yet; their new owner replays from the last commit, and each relay takes half
    of telemetry.v1."""
    joining = streams_worker(app_id, tmp_path / "joining.log", COMMITTING_OFTEN,
                             instance_id=f"{app_id}-2")
    try:
        _drive(stack, worker, tmp_path, seed=103, joining=joining)
        assert joining.running  # neither crashed in the rebalance
        assert worker.running
    finally:
        joining.stop()
    assert "Kafka refused" not in (tmp_path / "joining.log").read_text()


def test_a_worker_restarted_under_its_instance_id_takes_its_partitions_back_at_once(
    stack: Settings, worker: PipelineProcess, app_id: str
) -> None:
    """Static membership: a SIGKILLed worker's successor with the same ``--instance-id`` takes
    its place in both groups (faust's and the relay's) as it joins. Without it, the successor
    waited for the broker to give up on the dead member, ``SESSION_TIMEOUT_S`` (60 s), and the
    alerts with it (59.9 s measured)."""
    worker.kill()
    killed_at = time.monotonic()
    worker.start()  # returns once ready: partitions assigned, tables recovered, relay in
    assert time.monotonic() - killed_at < SESSION_TIMEOUT_S / 2
    admin = AdminClient(stack.kafka.client_config())
    for group in (app_id, relay_group(app_id)):
        described = admin.describe_consumer_groups([group])[group].result()
        assert [m.group_instance_id for m in described.members] == [f"{app_id}-1"], group


def test_a_second_worker_with_the_same_instance_id_ends_the_first(
    stack: Settings, worker: PipelineProcess, tmp_path: Path, app_id: str
) -> None:
    """Two running workers must not share an instance id: each join would take the other's
    place, both judging the same partitions in turn. The broker fences the first one's relay,
    which librdkafka only logs; the first worker must exit naming the cause."""
    twin = streams_worker(app_id, tmp_path / "twin.log", instance_id=f"{app_id}-1").start()
    try:
        assert worker.process is not None
        assert worker.process.wait(60) == 3
        assert "another process runs with the same --instance-id" in (
            tmp_path / "streams.log").read_text()
        wait_for(lambda: twin.ready, 60, "the second worker alone, ready")
        assert twin.running
    finally:
        twin.stop()


def test_a_hold_alert_outlives_the_release_until_an_officer_closes_it(
    stack: Settings, worker: PipelineProcess, tmp_path: Path
) -> None:
    """Moves under a hold raise a critical alert; the release stops new ones but does not end
    it; an officer's `smartport alerts close` does, recorded in the alert."""
    from schemas import iso6346
    from tests.helpers import crane_reading, declaration

    container = iso6346.with_check_digit(f"TSTU{int(uuid_hex(), 16) % 10**6:06d}")
    crane = unique("qc")
    path = tmp_path / "declarations.jsonl"
    since = high_watermarks(stack.kafka, topics.ALERTS)
    gateway = GatewayProcess(unique("gw"), unique("grp"), tmp_path).start()
    publisher = MqttPublisher(edge_mqtt(stack))

    def lift(seq: int) -> None:
        reading = crane_reading(device_id=crane, seq=seq, container_no=container,
                                load_kg=21_000.0, event="lift_start")
        publisher.publish(f"port/CNSHK/crane/{crane}/telemetry", encode_json(reading))

    def events() -> list[tuple[str, int]]:
        return [(a.state.value, a.version) for a in _alerts(stack, since, {container})
                if a.rule.value == "hold_violation"]

    try:
        # A record that is not a declaration, first: the worker skips it and carries on.
        producer = Producer(stack.kafka.client_config())
        producer.produce(topics.DECLARATIONS, key=container.encode(), value=b"not a declaration")
        assert producer.flush(30) == 0
        path.write_text(encode_json(declaration(container_no=container, status="held")).decode())
        declarations.load(stack, path)
        time.sleep(2)
        lift(1)
        lift(2)
        wait_for(lambda: ("updated", 2) in events(), 60, "the hold alert and its update")
        path.write_text(encode_json(declaration(container_no=container, status="released",
                                                version=2)).decode())
        declarations.load(stack, path)
        time.sleep(2)
        lift(3)
        lift(4)
        time.sleep(3)  # room for a wrong alert to show up
        alert_id = f"{container}/hold_violation/1"
        assert main(["alerts", "close", alert_id, "--officer", "Officer Lin",
                     "--reason", "moved before release; box inspected"]) == 0
        assert main(["alerts", "close", alert_id, "--officer", "Officer Lin",
                     "--reason", "again"]) == 4, "a closed alert cannot be closed again"
        assert worker.running
    finally:
        publisher.close(4)
        gateway.stop()
        gateway.forget_session(stack)
    assert sorted(set(events())) == [("closed", 3), ("raised", 1), ("updated", 2)]
    closed = [a for a in _alerts(stack, since, {container}) if a.state.value == "closed"]
    assert (closed[0].officer, closed[0].reason) == (
        "Officer Lin", "moved before release; box inspected")


def uuid_hex() -> str:
    return unique("x").split("-")[1]


def encode_json(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_crashing_agent_ends_the_worker(stack: Settings) -> None:
    """faust's own supervisor restarts a crashing agent forever while the process looks
    healthy (203 restarts in one run); ours exits non-zero for its supervisor to restart it.
    The crash here: the rule engine raising (a bug) on the first reading."""
    scratch, app_id = unique("telemetry"), unique("streams-crash")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(scratch, num_partitions=stack.kafka.partitions,
                                  replication_factor=stack.kafka.replication_factor)])[
        scratch].result(30)
    envelope = {"received_at": "2026-11-24T02:00:01Z", "gateway_id": "gw",
                "mqtt_topic": "port/CNSHK/crane/qc-01/telemetry", "reading": crane_reading()}
    producer = Producer(stack.kafka.client_config())
    producer.produce(scratch, key=b"CSQU3054383", value=json.dumps(envelope).encode())
    assert producer.flush(30) == 0
    try:
        finished = run_scratch_worker(app_id, scratch, prelude=(
            "def bug(*args, **kwargs):\n"
            "    raise RuntimeError('a bug in a rule')\n"
            "streams_app.evaluate = bug\n"))
        assert finished.returncode != 0, finished.stderr[-2000:]
        assert "the streams worker stopped: an agent crashed" in finished.stderr, (
            finished.stderr[-2000:])
        assert finished.stderr.count("a bug in a rule") < 10  # not restarted over and over
    finally:
        admin.delete_topics([scratch])
        delete_app_topics(stack.kafka, app_id)


def test_the_same_fleet_twice_every_reading_stored_every_anomaly_alerted(
    stack: Settings, tmp_path: Path
) -> None:
    """Devices that restart their counters: the second run reuses every device id and seq of
    the first (same seed, later event time), this time with anomalies. Nothing may be folded
    into the first run's readings: all of both runs are stored, all anomalies alerted."""
    from deploy import reconcile
    from deploy.pipeline import Pipeline

    def run(anomaly_rate: float, start_hours_ago: float) -> list[SimMessage]:
        fleet = Fleet(FleetConfig(
            devices=40, seed=131, anomaly_rate=anomaly_rate,
            start=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=start_hours_ago)))
        return list(islice(fleet.messages(), 1500))

    first, second = run(0.0, 3), run(0.04, 1)
    shared = ({(m.device_id, m.seq) for m in first}
              & {(m.device_id, m.seq) for m in second if m.truth})
    truth = {(m.truth[0], m.truth[1].value) for m in second if m.truth}
    assert len(truth) > 10
    assert len(shared) > 10  # the anomalies reuse the first run's device ids and seqs
    fleet = Fleet(FleetConfig(devices=40, seed=131))
    write_declarations(fleet, tmp_path / "declarations.jsonl")
    containers = {d.container_no for d in fleet.declarations} | {c for c, _ in truth}
    pipeline = Pipeline(stack, unique("twice"), tmp_path)
    since = high_watermarks(stack.kafka, topics.ALERTS)
    try:
        with pipeline:  # its streams worker reads from the end: declarations after it starts
            declarations.load(stack, tmp_path / "declarations.jsonl")
            for messages in (first, second):
                publisher = MqttPublisher(edge_mqtt(stack))
                for message in messages:
                    publisher.publish(message.topic, message.payload)
                publisher.close(len(messages))
            valid = sum(m.valid for m in first + second)
            wait_for(lambda: reconcile.stored_readings(stack, pipeline.gateway_id) >= valid,
                     180, f"{valid} readings stored")
            wait_for(lambda: truth <= _raised(stack, since, containers), 180,
                     "an alert for every anomaly of the second run")
            assert reconcile.stored_readings(stack, pipeline.gateway_id) == valid
            assert _raised(stack, since, containers) == truth
    finally:
        pipeline.clean_up()


def _raised(settings: Settings, since: dict[int, int], containers: set[str]
            ) -> set[tuple[str, str]]:
    return {(a.container_no, a.rule.value) for a in _alerts(settings, since, containers)
            if a.state.value == "raised"}


def test_a_worker_killed_before_its_first_commit_loses_nothing_it_started_after(
    stack: Settings, tmp_path: Path, app_id: str
) -> None:
    """``--offset-reset latest``: a new app id starts at the end of its sources as of its first
    start, and stays there until it commits. Left to Kafka's ``latest``, a worker killed before
    its first commit began again at the later end and skipped what came between (in the fault
    suite, 28 of 46 alerts)."""
    from schemas import iso6346
    from tests.helpers import declaration

    held = [iso6346.with_check_digit(f"TSTU{int(uuid_hex(), 16) % 10**6:06d}") for _ in "ab"]
    path = tmp_path / "declarations.jsonl"
    path.write_text("\n".join(
        encode_json(declaration(container_no=c, declaration_id=f"CNSHK-2026-{c}",
                                status="held")).decode() for c in held))
    since = high_watermarks(stack.kafka, topics.ALERTS)
    producer = Producer(stack.kafka.client_config())

    def lift(container: str) -> None:
        topic = f"port/CNSHK/crane/{unique('qc')}/telemetry"
        payload = encode_json(crane_reading(container_no=container, device_id=topic.split("/")[3]))
        accepted = classify(topic, payload, Limits(), now=datetime(2026, 11, 24, 3, tzinfo=UTC))
        assert isinstance(accepted, Accepted), accepted
        producer.produce(topics.TELEMETRY, key=accepted.key,
                         value=envelope_value(accepted, topic, "gw-test", datetime.now(UTC)))
        assert producer.flush(30) == 0

    def alerted(container: str) -> bool:
        return any(a.rule.value == "hold_violation" for a in _alerts(stack, since, {container}))

    worker = streams_worker(app_id, tmp_path / "streams.log",
                            committing_every(300)).start()
    try:
        declarations.load(stack, path)
        time.sleep(2)
        lift(held[0])
        wait_for(lambda: alerted(held[0]), 60, "the first worker's alert")
        worker.kill()  # nothing committed yet: the commit interval is 300 s
        lift(held[1])
        worker.start()  # joins once the broker has given up on the killed worker
        wait_for(lambda: alerted(held[1]), SESSION_TIMEOUT_S + 60,
                 "the alert of a reading sent while it was down")
    finally:
        worker.stop()
