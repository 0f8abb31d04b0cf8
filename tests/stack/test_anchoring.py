"""Anchoring end to end: batches from real Kafka, both ledgers, receipts and tampering."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_END, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from eth_account import Account
from prometheus_client import REGISTRY
from pydantic import SecretStr
from web3 import Web3

from anchoring import batches, merkle, receipts, verify
from anchoring.anchors import anchor_records, heads
from anchoring.errors import VerificationFailed
from anchoring.ledgers.base import Ledger
from anchoring.ledgers.factory import open_ledger, open_witness, periodic_witness
from anchoring.ledgers.file import FileLedger
from anchoring.service import MAX_BATCHES_PER_ENTRY, Anchorer
from anchoring.witness import PeriodicWitness, check_witness, witness
from deploy.cli import main
from deploy.pipeline import SMARTPORT
from deploy.services import ANVIL_DEV_KEY, ANVIL_PORT, HOST
from schemas import AnchorRecord, LedgerRef, Receipt, WitnessedCheckpoint, encode, topics
from smartport.kafka import read_range
from smartport.settings import Settings
from tests.helpers import batch_manifest, edit_second_root, rewrite_ledger
from tests.stack.pipeline import FirstProducerStuck, unique, wait_for

# anvil's second dev account (from its public test mnemonic): the forger.
ANVIL_SECOND_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

# -- against the real stack -----------------------------------------------------------------


@pytest.fixture
def scratch_topic(stack: Settings) -> Iterator[str]:
    name = unique("anchor-test")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(name, 2, 1)])[name].result()
    yield name
    admin.delete_topics([name])[name].result()


def _produce(settings: Settings, topic: str, counts: dict[int, int]) -> None:
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    for partition, count in counts.items():
        for n in range(count):
            producer.produce(topic, value=f'{{"p":{partition},"n":{n}}}'.encode(),
                             partition=partition)
            producer.poll(0)
    assert producer.flush(30) == 0


def _anchor(settings: Settings, ledger: Ledger, topic: str,
            witness: PeriodicWitness | None = None) -> Anchorer:
    anchorer = Anchorer(settings, ledger, group=unique("anchor"), source_topics=(topic,),
                        witness=witness)
    thread = threading.Thread(target=anchorer.run, kwargs={"idle_exit_s": 4.0})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    return anchorer


def _anchor_records(settings: Settings, topic: str) -> list[AnchorRecord]:
    return [r for r in anchor_records(settings) if r.manifest.topic == topic]


def _settings(stack: Settings, ledger_url: str, **batch: object) -> Settings:
    return stack.model_copy(update={
        "ledger_url": ledger_url,
        "batches": stack.batches.model_copy(update={"anchor_records": 1000,
                                                    "anchor_seconds": 1.0, **batch}),
    })


def test_file_ledger_receipts_verify_and_tampering_is_named(
    stack: Settings, scratch_topic: str, tmp_path: Path
) -> None:
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}")
    ledger = FileLedger(tmp_path / "ledger")
    _produce(settings, scratch_topic, {0: 2500})
    first = _anchor(settings, ledger, scratch_topic)
    # Partition 1's batch in a ledger entry of its own, however the first run's flushes fell
    # (one run may anchor all its batches in one entry): a case below needs another real root.
    _produce(settings, scratch_topic, {1: 700})
    second = _anchor(settings, ledger, scratch_topic)
    assert (first.anchored_batches, second.anchored_batches) == (3, 1)
    ranges = sorted((r.manifest.partition, r.manifest.first_offset, r.manifest.last_offset)
                    for r in _anchor_records(settings, scratch_topic))
    assert ranges == [(0, 0, 999), (0, 1000, 1999), (0, 2000, 2499), (1, 0, 699)]

    receipt, record = receipts.build(settings, scratch_topic, 0, 1500)
    assert json.loads(record) == {"p": 0, "n": 1500}
    trusted = {ledger.ledger_id}
    verify.verify(receipt, record, ledger, trusted)

    def tampered(**changes: object) -> Receipt:
        return receipt.model_copy(update=changes)

    proof = list(receipt.inclusion_proof)
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    other_root = next(r.aggregate.root for r in _anchor_records(settings, scratch_topic)
                      if r.aggregate.root != receipt.aggregate.root)
    def moved(**changes: object) -> Receipt:
        return tampered(record=receipt.record.model_copy(update=changes))

    cases: list[tuple[Receipt, bytes, str]] = [
        (receipt, record.replace(b"1500", b"1501"), "record hash"),
        # The statement is "these bytes are at topic/partition/offset": any other place fails.
        (moved(offset=1503), record, "record hash"),
        (moved(offset=1503, leaf_hash=merkle.BLAKE3.hash_leaf(
            (1503).to_bytes(8, "big") + record).hex()), record, "inclusion"),
        (moved(offset=2100), record, "position"),
        (moved(partition=1), record, "position"),
        (moved(topic="telemetry.v1"), record, "position"),
        (tampered(inclusion_proof=tuple(proof)), record, "inclusion"),
        (tampered(leaf_index=receipt.leaf_index + 1), record, "inclusion"),
        (tampered(manifest=receipt.manifest.model_copy(update={"count": 2000})), record,
         "inclusion"),
        # A size that leaves the audit path's shape alone still changes the manifest, which
        # is no longer the one under the anchored root.
        (tampered(manifest=receipt.manifest.model_copy(update={"count": 999})), record,
         "aggregation"),
        (tampered(aggregate=receipt.aggregate.model_copy(update={"root": other_root})), record,
         "aggregation"),
    ]
    for bad, value, check in cases:
        with pytest.raises(VerificationFailed, match=f"^{check}:"):
            verify.verify(bad, value, ledger, trusted)
    with pytest.raises(VerificationFailed, match=r"^ledger: .* not one you trust"):
        verify.verify(receipt, record, ledger, {"0" * 64})

    receipt_file, record_file = tmp_path / "receipt.json", tmp_path / "record.bin"
    assert main(["receipt", "--topic", scratch_topic, "--partition", "0", "--offset", "1500",
                 "-o", str(receipt_file), "--record-out", str(record_file)]) == 0
    ledger_env = pytest.MonkeyPatch()
    ledger_env.setenv("SMARTPORT_LEDGER_URL", f"file://{tmp_path / 'ledger'}")
    verify_cli = ["verify", str(receipt_file), "--record", str(record_file)]
    try:
        assert main(verify_cli) == 2, "a verifier must name the ledger it trusts"
        assert main(["ledger", "id"]) == 0
        assert main([*verify_cli, "--trust-ledger", ledger.ledger_id]) == 0
        rewrite_ledger(ledger.directory, edit_second_root)
        assert main([*verify_cli, "--trust-ledger", ledger.ledger_id]) == 1
    finally:
        ledger_env.undo()


def _evm_settings(stack: Settings, key: str = ANVIL_DEV_KEY) -> Settings:
    return _settings(stack, f"evm+http://{HOST}:{ANVIL_PORT}").model_copy(
        update={"ledger_key": SecretStr(key)})


def test_evm_ledger_on_anvil(stack: Settings, scratch_topic: str) -> None:
    settings = _evm_settings(stack)
    _produce(settings, scratch_topic, {0: 1200})
    ledger = open_ledger(settings, writable=True)
    owner = Account.from_key(ANVIL_DEV_KEY).address
    assert ledger.ledger_id == f"eip155:31337:{owner}"
    _anchor(settings, ledger, scratch_topic)
    receipt, record = receipts.build(settings, scratch_topic, 0, 1100)
    assert receipt.ledger.kind == "evm"
    verifier, trusted = open_ledger(settings, writable=False), {ledger.ledger_id}
    verify.verify(receipt, record, verifier, trusted)

    missing = receipt.model_copy(update={"ledger": receipt.ledger.model_copy(
        update={"entry": "0x" + "ab" * 32})})
    with pytest.raises(VerificationFailed, match=r"^ledger entry missing:"):
        verify.verify(missing, record, verifier, trusted)
    other_chain = receipt.model_copy(update={"ledger": LedgerRef(
        kind="evm", ledger_id=f"eip155:1:{owner}", entry=receipt.ledger.entry)})
    with pytest.raises(VerificationFailed, match=re.escape(
            f"ledger: the receipt points at ledger eip155:1:{owner}, the node at "
            "http://127.0.0.1:8545 is chain 31337")):
        verify.verify(other_chain, record, verifier, {other_chain.ledger.ledger_id})
    with pytest.raises(VerificationFailed, match=r"^ledger entry different:"):
        verifier.check(receipt.ledger, "00" * 32, "blake3")


def test_a_root_reposted_by_another_account_does_not_verify(
    stack: Settings, scratch_topic: str
) -> None:
    """Anyone can post the magic bytes: a forger re-posts a genuine root from anvil's second
    dev account and points a receipt at that transaction, naming the genuine ledger or its own."""
    settings = _evm_settings(stack)
    _produce(settings, scratch_topic, {0: 50})
    genuine = open_ledger(settings, writable=True)
    _anchor(settings, genuine, scratch_topic)
    receipt, record = receipts.build(settings, scratch_topic, 0, 7)
    verifier, trusted = open_ledger(settings, writable=False), {genuine.ledger_id}
    verify.verify(receipt, record, verifier, trusted)

    forger = open_ledger(_evm_settings(stack, ANVIL_SECOND_KEY), writable=True)
    forged_ref = forger.anchor(receipt.aggregate.root, receipt.manifest.hash_alg,
                               [(receipt.manifest, receipt.aggregate)])
    as_genuine = receipt.model_copy(update={"ledger": forged_ref.model_copy(
        update={"ledger_id": genuine.ledger_id})})
    with pytest.raises(VerificationFailed, match=r"^ledger: transaction .* sent by "
                       + Account.from_key(ANVIL_SECOND_KEY).address):
        verify.verify(as_genuine, record, verifier, trusted)
    as_itself = receipt.model_copy(update={"ledger": forged_ref})
    with pytest.raises(VerificationFailed, match=r"^ledger: .* not one you trust"):
        verify.verify(as_itself, record, verifier, trusted)


def test_the_anchorer_witnesses_the_file_ledger_on_the_chain(
    stack: Settings, scratch_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint the operator witnessed on a public chain cannot be taken back: the file
    ledger cut short after it fails `ledger verify`; a witness that is not of this checkpoint,
    or not by the trusted account, fails as `witness`."""
    witness_url = f"evm+http://{HOST}:{ANVIL_PORT}"
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}", anchor_records=20).model_copy(
        update={"state_dir": tmp_path / "state", "ledger_witness_url": witness_url,
                "ledger_witness_seconds": 0.01, "ledger_key": SecretStr(ANVIL_DEV_KEY)})
    ledger = open_ledger(settings)
    for _ in range(2):  # two anchorings, two ledger entries, each witnessed
        _produce(settings, scratch_topic, {0: 100, 1: 100})
        _anchor(settings, ledger, scratch_topic, periodic_witness(settings, ledger))
    lines = (tmp_path / "state" / "anchoring" / "witnessed.jsonl").read_text().splitlines()
    assert lines, "the anchorer witnessed no checkpoint"
    witnessed = [WitnessedCheckpoint.model_validate_json(line) for line in lines]
    assert [w.checkpoint.size for w in witnessed] == [1, 2]
    chain = open_witness(settings, writable=False)
    assert chain is not None
    operator = Account.from_key(ANVIL_DEV_KEY).address
    trusted = {f"eip155:31337:{operator}"}
    for one in witnessed:
        check_witness(one, chain, trusted)

    last = witnessed[-1]
    grown = last.model_copy(update={"checkpoint": last.checkpoint.model_copy(
        update={"size": last.checkpoint.size + 1})})
    with pytest.raises(VerificationFailed, match=r"^witness: ledger entry different"):
        check_witness(grown, chain, trusted)
    with pytest.raises(VerificationFailed, match=r"^witness: ledger: .* not one you trust"):
        check_witness(last, chain, {"eip155:31337:" + Account.from_key(ANVIL_SECOND_KEY).address})
    forger = open_witness(settings.model_copy(update={"ledger_key": SecretStr(ANVIL_SECOND_KEY)}))
    assert forger is not None
    forged = witness(last.checkpoint, forger)
    with pytest.raises(VerificationFailed, match=r"^witness: ledger: transaction .* sent by"):
        check_witness(forged.model_copy(update={"witness": forged.witness.model_copy(
            update={"ledger_id": f"eip155:31337:{operator}"})}), chain, trusted)

    published = tmp_path / "witnessed.json"
    published.write_bytes(encode(last))
    for name, value in (("SMARTPORT_LEDGER_URL", settings.ledger_url),
                        ("SMARTPORT_LEDGER_WITNESS_URL", witness_url),
                        ("SMARTPORT_STATE_DIR", str(tmp_path / "verifier"))):
        monkeypatch.setenv(name, value)
    verify_args = ["ledger", "verify", "--checkpoint", str(published), "--no-remember",
                   "--trust-ledger", f"eip155:31337:{operator}"]
    assert main(verify_args) == 0
    assert f"witnessed: size {last.checkpoint.size} by eip155:31337:{operator}" in \
        capsys.readouterr().err
    rewrite_ledger(tmp_path / "ledger", lambda entries: entries[:-1])
    assert main(verify_args) == 1
    assert "ledger consistency" in capsys.readouterr().err


def test_anchor_records_kafka_refuses_are_retried_not_committed(
    stack: Settings, scratch_topic: str, tmp_path: Path
) -> None:
    """The anchorer committed its offsets once the producer's queue was empty, whether Kafka
    had taken its anchor records or refused them (here: larger than the topic allows); and on
    the retry of a batch the ledger already held it moved past the batch before anchors.v1
    had it, so a second failure (a Kafka outage longer than two flush timeouts, as in a fault
    run of the CI) left it on the ledger and never on anchors.v1. It must keep its offsets
    and retry until anchors.v1 takes exactly what the ledger holds."""
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}")
    _produce(settings, scratch_topic, {0: 300})
    ledger = FileLedger(tmp_path / "ledger")
    admin = AdminClient(stack.kafka.client_config())

    def limit(value: str | None) -> None:
        """anchors.v1's largest record batch: ``value`` bytes, or the broker's default."""
        entry = ConfigEntry("max.message.bytes", value, incremental_operation=(
            AlterConfigOpType.SET if value else AlterConfigOpType.DELETE))
        resource = ConfigResource(ResourceType.TOPIC, topics.ANCHORS, incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result()

    anchorer = Anchorer(settings, ledger, group=unique("anchor"), source_topics=(scratch_topic,))
    stop = threading.Event()
    thread = threading.Thread(target=anchorer.run, kwargs={"stop": stop})
    limit("64")
    try:
        thread.start()
        wait_for(lambda: ledger.checkpoint().size > 0, 60, "the ledger to take the batch")
        time.sleep(3)  # a few anchoring rounds
        assert anchorer.anchored_batches == 0
        assert not anchorer.readiness.ready
        assert _anchor_records(settings, scratch_topic) == []
    finally:
        limit(None)
    try:
        wait_for(lambda: anchorer.anchored_batches > 0, 60, "the anchorer to retry")
    finally:
        stop.set()
        thread.join(60)
    [record] = _anchor_records(settings, scratch_topic)
    assert (record.manifest.first_offset, record.manifest.last_offset) == (0, 299)
    assert ledger.checkpoint().size == 1, "the ledger's entry republished, not anchored again"


def test_a_backlogs_tail_is_anchored_once_read_and_a_trickle_waits_for_the_interval(
    stack: Settings, scratch_topic: str, tmp_path: Path
) -> None:
    """After a full entry (a backlog being read) the anchorer waited ``anchor_seconds`` for
    the next entry, and its last, partial, batches an interval more (they closed just after
    that entry): the end of a backlog reached the ledger up to two intervals after it was
    read. Once read it is anchored; records that trickle in afterwards still wait for the
    interval, so a quiet stream does not make an entry per record."""
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}", anchor_records=10,
                         anchor_seconds=60.0)
    ledger = FileLedger(tmp_path / "ledger")
    full_entry = MAX_BATCHES_PER_ENTRY * 10
    _produce(settings, scratch_topic, {0: full_entry + 45})  # then 4 batches and 5 records
    anchorer = Anchorer(settings, ledger, group=unique("anchor"), source_topics=(scratch_topic,))
    stop = threading.Event()
    thread = threading.Thread(target=anchorer.run, kwargs={"stop": stop})
    thread.start()
    try:
        wait_for(lambda: anchorer.anchored_batches == MAX_BATCHES_PER_ENTRY + 5, 30,
                 "the backlog's tail anchored, well before the 60-s interval")
        assert ledger.checkpoint().size == 2
        _produce(settings, scratch_topic, {0: 3})
        time.sleep(3)  # the records read, several consume rounds come back empty
        assert anchorer.anchored_batches == MAX_BATCHES_PER_ENTRY + 5
        assert ledger.checkpoint().size == 2
    finally:
        stop.set()
        thread.join(60)
    ranges = sorted((r.manifest.first_offset, r.manifest.last_offset)
                    for r in _anchor_records(settings, scratch_topic))
    assert ranges[-5:] == [(full_entry + n, full_entry + n + 9) for n in range(0, 40, 10)] + [
        (full_entry + 40, full_entry + 44)]  # the partial batch, closed at its last record


@pytest.mark.parametrize("first_entry", ["both partitions", "partition 0 alone"])
def test_a_producer_that_delivers_nothing_is_replaced_and_the_batch_published_once(
    stack: Settings, scratch_topic: str, tmp_path: Path, first_entry: str
) -> None:
    """After a Kafka restart a librdkafka producer was seen left with no broker to ask, for
    good: the anchorer's every retry would wait on it again, its batches on the ledger and
    never on anchors.v1. Here the first producer talks to a port nothing listens on.

    In "partition 0 alone", batches are of 200 records: partition 0's closes at its last
    record and goes into the first entry alone; partition 1's (100 records) closes by time
    during the retries. The republish of the first entry once dropped it with partition 0's
    (a CI run of "both partitions" caught it, its partitions' records read rounds apart)."""
    batch = {} if first_entry == "both partitions" else {"anchor_records": 200}
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}", **batch)
    settings = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"replace_after_s": 3.0})})
    _produce(settings, scratch_topic, {0: 200, 1: 100})
    ledger = FileLedger(tmp_path / "ledger")
    new_producer = FirstProducerStuck()

    group = unique("anchor")
    anchorer = Anchorer(settings, ledger, group=group, source_topics=(scratch_topic,),
                        new_producer=new_producer)
    thread = threading.Thread(target=anchorer.run, kwargs={"idle_exit_s": 4.0})
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert new_producer.made == 2
    assert REGISTRY.get_sample_value("smartport_kafka_producers_replaced_total",
                                     {"client": f"{group}-producer"}) == 1
    records = _anchor_records(settings, scratch_topic)
    assert sorted((r.manifest.partition, r.manifest.first_offset, r.manifest.last_offset)
                  for r in records) == [(0, 0, 199), (1, 0, 99)]
    entries = [r.ledger.entry for r in sorted(records, key=lambda r: r.manifest.partition)]
    assert ledger.checkpoint().size == len(set(entries)), (
        "the ledger's entry republished, not anchored again")
    if first_entry == "partition 0 alone":
        assert entries == ["0", "1"]


@pytest.mark.parametrize("crash", ["before sending", "after sending"])
def test_a_crash_around_sending_never_anchors_a_batch_twice(
    stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    settings = _evm_settings(stack).model_copy(update={"state_dir": tmp_path})
    ledger = open_ledger(settings, writable=True)
    web3 = Web3(Web3.HTTPProvider(f"http://{HOST}:{ANVIL_PORT}"))
    owner = Account.from_key(ANVIL_DEV_KEY).address
    nonce = web3.eth.get_transaction_count(owner)
    records = [(o, f"r{o}".encode()) for o in range(5)]
    manifest = batch_manifest(unique("t"), 0, records, int(time.time() * 1000))
    aggregate = batches.aggregate([manifest], "blake3")[0]

    def crashed(*_: object, **__: object) -> None:
        raise RuntimeError("the anchorer died here")

    point = "send_raw_transaction" if crash == "before sending" else "wait_for_transaction_receipt"
    with monkeypatch.context() as patch:
        patch.setattr(ledger._web3.eth, point, crashed)  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            ledger.anchor(aggregate.root, "blake3", [(manifest, aggregate)])

    restarted = open_ledger(settings, writable=True)
    found = restarted.find(batches.batch_prefix(manifest.topic, 0, 0))
    assert found is not None
    assert [r.manifest for r in found] == [manifest]
    assert web3.eth.get_transaction_count(owner) == nonce + 1, "one transaction, not two"
    restarted.check(found[0].ledger, aggregate.root, "blake3")
    assert restarted.find(batches.batch_prefix(manifest.topic, 0, 0)) == found


def test_sigkill_mid_stream_gives_identical_roots_and_no_duplicate_entries(
    stack: Settings, scratch_topic: str, tmp_path: Path
) -> None:
    _produce(stack, scratch_topic, {0: 20_000, 1: 20_000})
    # 800 batches: an entry holds at most MAX_BATCHES_PER_ENTRY, so the kill below lands after
    # two entries and before the last however fast the anchorer reads (with 80 batches of 500
    # records, it once read all 40,000 before its first round: one entry, no second to wait for).
    per_batch = 50
    assert 40_000 // per_batch > 3 * MAX_BATCHES_PER_ENTRY
    env = {"SMARTPORT_LEDGER_URL": f"file://{tmp_path / 'ledger'}",
           "SMARTPORT_BATCHES__ANCHOR_RECORDS": str(per_batch),
           "SMARTPORT_BATCHES__ANCHOR_SECONDS": "0.2", "PATH": "/usr/bin:/bin"}
    group = unique("anchor")
    log = tmp_path / "anchor.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            return subprocess.Popen([*SMARTPORT, "anchor", "--topic", scratch_topic,
                                     "--group", group], stdout=handle, stderr=handle, env=env)

    first = start()
    wait_for(lambda: log.read_text().count('"msg": "anchored"') >= 2, 60, "first anchors")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start()
    try:
        wait_for(lambda: sum(r.manifest.count for r in {
            r.manifest.batch_id: r for r in _anchor_records(stack, scratch_topic)}.values())
            == 40_000, 120, "every record anchored")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)

    anchored = _anchor_records(stack, scratch_topic)
    by_batch = {r.manifest.batch_id: r for r in anchored}
    for record in anchored:  # a republished batch is byte-identical to the first publication
        assert record == by_batch[record.manifest.batch_id]
    values: dict[int, list[bytes]] = {0: [], 1: []}
    for message in read_range(stack.kafka, scratch_topic, {}):
        values[message.partition() or 0].append(message.value() or b"")
    for manifest in (r.manifest for r in by_batch.values()):
        leaves = values[manifest.partition][manifest.first_offset:manifest.last_offset + 1]
        assert manifest.root == merkle.root([
            batches.leaf(manifest.first_offset + i, value) for i, value in enumerate(leaves)
        ]).hex(), manifest.batch_id
    entries = FileLedger(tmp_path / "ledger", writable=False).entries()
    on_ledger = Counter(r["manifest"]["batch_id"] for e in entries for r in e["records"])
    assert set(on_ledger) == set(by_batch)
    assert max(on_ledger.values()) == 1, "a batch was anchored twice"



@pytest.fixture
def own_anchor_topics(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminClient]:
    """Scratch copies of anchors.v1 and anchors.heads.v1 for this test's anchorers to write
    and read. Not compacted: Kafka refuses DeleteRecords on a compacted topic, and a test
    empties the heads with it (compaction itself is Kafka's)."""
    admin = AdminClient(stack.kafka.client_config())
    scratch = {"ANCHORS": unique("anchors"), "ANCHOR_HEADS": unique("heads")}
    created = admin.create_topics([
        NewTopic(scratch["ANCHORS"], 2, 1),
        NewTopic(scratch["ANCHOR_HEADS"], 2, 1)])
    for future in created.values():
        future.result()
    for name, topic in scratch.items():
        monkeypatch.setattr(topics, name, topic)
    yield admin
    for future in admin.delete_topics(list(scratch.values())).values():
        future.result()


def _expire(admin: AdminClient, *partitions: tuple[str, int, int]) -> None:
    """Delete the records of each (topic, partition) before an offset, as retention does."""
    for future in admin.delete_records([TopicPartition(*p) for p in partitions]).values():
        future.result()


def test_a_quiet_partition_resumes_its_chain_after_retention(
    stack: Settings, scratch_topic: str, tmp_path: Path, own_anchor_topics: AdminClient
) -> None:
    """The anchorer learnt where each partition resumes by reading anchors.v1 whole: seconds
    per day of history at every start, and nothing at all for a partition quiet for longer
    than the topic's retention (7 days) — the partition's records expire with it, and its
    next batch started a new hash chain (no previous manifest) instead of continuing the old
    one. (And reading a topic whose records had all expired waited for them until it timed
    out.)"""
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}")
    ledger = FileLedger(tmp_path / "ledger")
    _produce(settings, scratch_topic, {0: 300})
    _anchor(settings, ledger, scratch_topic)
    [first] = _anchor_records(settings, scratch_topic)
    assert (first.manifest.first_offset, first.manifest.last_offset) == (0, 299)

    _expire(own_anchor_topics, (topics.ANCHORS, 0, OFFSET_END), (topics.ANCHORS, 1, OFFSET_END),
            (scratch_topic, 0, 300))
    _produce(settings, scratch_topic, {0: 10})
    _anchor(settings, ledger, scratch_topic)

    [second] = _anchor_records(settings, scratch_topic)
    assert (second.manifest.first_offset, second.manifest.last_offset) == (300, 309)
    assert second.manifest.prev_manifest_hash == batches.manifest_hash(first.manifest), \
        "the partition's hash chain was cut"


def test_an_anchorer_from_before_the_heads_resumes_from_anchors_v1_once(
    stack: Settings, scratch_topic: str, tmp_path: Path, own_anchor_topics: AdminClient
) -> None:
    """Upgrading: anchors.v1 holds batches and anchors.heads.v1 nothing. The anchorer finds
    where each partition resumes in anchors.v1, and writes the heads for the next start."""
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}")
    ledger = FileLedger(tmp_path / "ledger")
    _produce(settings, scratch_topic, {0: 300, 1: 200})
    _anchor(settings, ledger, scratch_topic)
    before = {(r.manifest.partition): r for r in _anchor_records(settings, scratch_topic)}
    _expire(own_anchor_topics, (topics.ANCHOR_HEADS, 0, OFFSET_END),
            (topics.ANCHOR_HEADS, 1, OFFSET_END))
    assert heads(settings) == {}

    _produce(settings, scratch_topic, {0: 10})
    _anchor(settings, ledger, scratch_topic)

    after = [r for r in _anchor_records(settings, scratch_topic)
             if r.manifest.batch_id not in {b.manifest.batch_id for b in before.values()}]
    assert [(r.manifest.first_offset, r.manifest.last_offset) for r in after] == [(300, 309)]
    assert after[0].manifest.prev_manifest_hash == batches.manifest_hash(before[0].manifest)
    assert {key: r.manifest.batch_id for key, r in heads(settings).items()} == {
        (scratch_topic, 0): after[0].manifest.batch_id,
        (scratch_topic, 1): before[1].manifest.batch_id}


def test_malformed_heads_are_skipped_and_the_partition_resumes(
    stack: Settings, scratch_topic: str, tmp_path: Path, own_anchor_topics: AdminClient
) -> None:
    """Anyone who can write anchors.heads.v1 may post garbage under a partition's key: 20 KB
    of '[', bytes that are not UTF-8, JSON with a key twice. The anchorer skips them and
    resumes from the last valid head."""
    settings = _settings(stack, f"file://{tmp_path / 'ledger'}")
    ledger = FileLedger(tmp_path / "ledger")
    _produce(settings, scratch_topic, {0: 300})
    _anchor(settings, ledger, scratch_topic)
    [first] = _anchor_records(settings, scratch_topic)
    producer = Producer(settings.kafka.client_config())
    for garbage in (b"[" * 20_000, b"\xff\xfe" * 100, b'{"manifest": {}, "manifest": {}}'):
        producer.produce(topics.ANCHOR_HEADS, key=f"{scratch_topic}/0".encode(), value=garbage)
    assert producer.flush(30) == 0

    _produce(settings, scratch_topic, {0: 10})
    _anchor(settings, ledger, scratch_topic)

    [second] = [r for r in _anchor_records(settings, scratch_topic) if r != first]
    assert (second.manifest.first_offset, second.manifest.last_offset) == (300, 309)
    assert second.manifest.prev_manifest_hash == batches.manifest_hash(first.manifest)
