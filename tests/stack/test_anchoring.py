"""Anchoring end to end: batches from real Kafka, both ledgers, receipts and tampering."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from anchoring import merkle, receipts, verify
from anchoring.anchors import anchor_records
from anchoring.errors import VerificationFailed
from anchoring.ledgers.base import Ledger
from anchoring.ledgers.factory import open_ledger
from anchoring.ledgers.file import FileLedger
from anchoring.service import Anchorer
from deploy.cli import main
from deploy.pipeline import SMARTPORT
from deploy.services import ANVIL_DEV_KEY, ANVIL_PORT, HOST
from schemas import AnchorRecord, LedgerRef, Receipt
from smartport.kafka import read_range
from smartport.settings import Settings
from tests.helpers import edit_second_root, rewrite_ledger
from tests.stack.pipeline import unique, wait_for

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


def _anchor(settings: Settings, ledger: Ledger, topic: str) -> Anchorer:
    anchorer = Anchorer(settings, ledger, group=unique("anchor"), source_topics=(topic,))
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
    _produce(settings, scratch_topic, {0: 2500, 1: 700})
    ledger = FileLedger(tmp_path / "ledger")
    anchorer = _anchor(settings, ledger, scratch_topic)
    assert anchorer.anchored_batches == 4
    ranges = sorted((r.manifest.partition, r.manifest.first_offset, r.manifest.last_offset)
                    for r in _anchor_records(settings, scratch_topic))
    assert ranges == [(0, 0, 999), (0, 1000, 1999), (0, 2000, 2499), (1, 0, 699)]

    receipt, record = receipts.build(settings, scratch_topic, 0, 1500)
    assert json.loads(record) == {"p": 0, "n": 1500}
    verify.verify(receipt, record, ledger)

    def tampered(**changes: object) -> Receipt:
        return receipt.model_copy(update=changes)

    proof = list(receipt.inclusion_proof)
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    other_root = next(r.aggregate.root for r in _anchor_records(settings, scratch_topic)
                      if r.aggregate.root != receipt.aggregate.root)
    cases: list[tuple[Receipt, bytes, str]] = [
        (receipt, record.replace(b"1500", b"1501"), "record hash"),
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
            verify.verify(bad, value, ledger)

    receipt_file, record_file = tmp_path / "receipt.json", tmp_path / "record.bin"
    assert main(["receipt", "--topic", scratch_topic, "--partition", "0", "--offset", "1500",
                 "-o", str(receipt_file), "--record-out", str(record_file)]) == 0
    ledger_env = pytest.MonkeyPatch()
    ledger_env.setenv("SMARTPORT_LEDGER_URL", f"file://{tmp_path / 'ledger'}")
    try:
        assert main(["verify", str(receipt_file), "--record", str(record_file)]) == 0
        rewrite_ledger(ledger.directory,
                       edit_second_root if len(ledger.entries()) > 1 else lambda lines: lines)
        assert main(["verify", str(receipt_file), "--record", str(record_file)]) == 1
    finally:
        ledger_env.undo()


def test_evm_ledger_on_anvil(stack: Settings, scratch_topic: str) -> None:
    rpc = f"evm+http://{HOST}:{ANVIL_PORT}"
    settings = _settings(stack, rpc).model_copy(update={"ledger_key": SecretStr(ANVIL_DEV_KEY)})
    _produce(settings, scratch_topic, {0: 1200})
    ledger = open_ledger(settings, writable=True)
    assert ledger.ledger_id == "eip155:31337"
    _anchor(settings, ledger, scratch_topic)
    receipt, record = receipts.build(settings, scratch_topic, 0, 1100)
    assert receipt.ledger.kind == "evm"
    verifier = open_ledger(settings, writable=False)
    verify.verify(receipt, record, verifier)

    missing = receipt.model_copy(update={"ledger": receipt.ledger.model_copy(
        update={"entry": "0x" + "ab" * 32})})
    with pytest.raises(VerificationFailed, match=r"^ledger entry missing:"):
        verify.verify(missing, record, verifier)
    other_chain = receipt.model_copy(update={"ledger": LedgerRef(
        kind="evm", ledger_id="eip155:1", entry=receipt.ledger.entry)})
    with pytest.raises(VerificationFailed, match=re.escape(
            "ledger: the receipt points at evm ledger eip155:1, the node at "
            "http://127.0.0.1:8545 is eip155:31337")):
        verify.verify(other_chain, record, verifier)
    with pytest.raises(VerificationFailed, match=r"^ledger entry different:"):
        verifier.check(receipt.ledger, "00" * 32, "blake3")


def test_sigkill_mid_stream_gives_identical_roots_and_no_duplicate_entries(
    stack: Settings, scratch_topic: str, tmp_path: Path
) -> None:
    _produce(stack, scratch_topic, {0: 20_000, 1: 20_000})
    env = {"SMARTPORT_LEDGER_URL": f"file://{tmp_path / 'ledger'}",
           "SMARTPORT_BATCHES__ANCHOR_RECORDS": "500", "SMARTPORT_BATCHES__ANCHOR_SECONDS": "0.2",
           "PATH": "/usr/bin:/bin"}
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
        assert manifest.root == merkle.root(leaves).hex(), manifest.batch_id
    entries = FileLedger(tmp_path / "ledger", writable=False).entries()
    on_ledger = Counter(r["manifest"]["batch_id"] for e in entries for r in e["records"])
    assert set(on_ledger) == set(by_batch)
    assert max(on_ledger.values()) == 1, "a batch was anchored twice"
