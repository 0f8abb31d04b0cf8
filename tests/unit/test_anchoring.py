"""Anchoring without services: batch ranges, manifests, aggregation, file-ledger tampering."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anchoring import batches, merkle
from anchoring.errors import VerificationFailed
from anchoring.ledgers.file import FileLedger
from deploy.cli import main
from tests.helpers import edit_second_root, rewrite_ledger

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def _records(offsets: range) -> list[batches.KafkaRecord]:
    return [batches.KafkaRecord(o, f"record-{o}".encode(), T0) for o in offsets]


def test_batch_ranges_are_fixed_by_offsets() -> None:
    assert [batches.batch_end(o, 1000) for o in (0, 999, 1000, 1500, 2999)] == [
        999, 999, 1999, 1999, 2999]


def test_manifests_are_deterministic_and_chained() -> None:
    first = batches.manifest("t", 0, _records(range(0, 10)), hash_alg="blake3",
                             prev_manifest_hash=None)
    again = batches.manifest("t", 0, _records(range(0, 10)), hash_alg="blake3",
                             prev_manifest_hash=None)
    assert first == again
    assert first.root == merkle.root([f"record-{o}".encode() for o in range(10)]).hex()
    second = batches.manifest("t", 0, _records(range(10, 15)), hash_alg="blake3",
                              prev_manifest_hash=batches.manifest_hash(first))
    assert second.prev_manifest_hash == batches.manifest_hash(first)
    assert (second.batch_id, second.count) == ("t/0/10-14", 5)
    proofs = batches.aggregate([first, second], "blake3")
    for manifest, proof in zip([first, second], proofs, strict=True):
        assert merkle.verify_inclusion(
            batches.manifest_bytes(manifest), proof.index, proof.size,
            [bytes.fromhex(n) for n in proof.proof], bytes.fromhex(proof.root))


# -- the file ledger, on its own ------------------------------------------------------------


@pytest.fixture
def ledger_with_entries(tmp_path: Path) -> FileLedger:
    ledger = FileLedger(tmp_path / "ledger")
    for n in range(3):
        manifest = batches.manifest("t", 0, _records(range(n * 10, n * 10 + 10)),
                                    hash_alg="blake3", prev_manifest_hash=None)
        proof = batches.aggregate([manifest], "blake3")[0]
        ledger.anchor(proof.root, "blake3", [(manifest, proof)])
    return ledger


def _forge_signature(lines: list[str]) -> list[str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    entry = json.loads(lines[2])
    entry["signature"] = Ed25519PrivateKey.generate().sign(
        bytes.fromhex(entry["entry_hash"])).hex()
    return [*lines[:2], json.dumps(entry)]


@pytest.mark.parametrize(("tamper", "check"), [
    (edit_second_root, "ledger entry: entry 1 was edited"),
    (lambda lines: [lines[0], lines[2]], "ledger chain: entry at position 1 has index 2"),
    (lambda lines: [lines[1], lines[0], lines[2]], "ledger chain: entry at position 0"),
    (_forge_signature, "ledger signature: entry 2 is not signed by ledger key"),
], ids=["edited", "removed", "reordered", "forged-signature"])
def test_file_ledger_detects_tampering(ledger_with_entries: FileLedger,
                                       tamper: Callable[[list[str]], list[str]],
                                       check: str) -> None:
    assert len(ledger_with_entries.entries()) == 3
    rewrite_ledger(ledger_with_entries.directory, tamper)
    with pytest.raises(VerificationFailed, match=check):
        ledger_with_entries.entries()


def test_ledger_verify_cli(ledger_with_entries: FileLedger, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{ledger_with_entries.directory}")
    assert main(["ledger", "verify"]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    rewrite_ledger(ledger_with_entries.directory, edit_second_root)
    assert main(["ledger", "verify"]) == 1
    assert "entry 1 was edited" in capsys.readouterr().err
