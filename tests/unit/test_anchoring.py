"""Anchoring without services: batch ranges, manifests, aggregation, file-ledger tampering."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anchoring import batches, merkle, verify
from anchoring.errors import VerificationFailed
from anchoring.ledgers.file import FileLedger
from deploy.cli import main
from schemas import LedgerRef, Receipt, RecordRef
from tests.helpers import batch_manifest, edit_second_root, rewrite_ledger

T0 = datetime(2026, 11, 24, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


Record = tuple[int, bytes]  # offset, value


def _records(offsets: range) -> list[Record]:
    return [(o, f"record-{o}".encode()) for o in offsets]


def test_batch_ranges_are_fixed_by_offsets() -> None:
    assert [batches.batch_end(o, 1000) for o in (0, 999, 1000, 1500, 2999)] == [
        999, 999, 1999, 1999, 2999]


def test_manifests_are_deterministic_and_chained() -> None:
    first = batch_manifest("t", 0, _records(range(0, 10)), T0_MS)
    again = batch_manifest("t", 0, _records(range(0, 10)), T0_MS)
    assert first == again
    assert first.root == merkle.root(
        [o.to_bytes(8, "big") + f"record-{o}".encode() for o in range(10)]).hex()
    second = batch_manifest("t", 0, _records(range(10, 15)), T0_MS,
                            prev_manifest_hash=batches.manifest_hash(first))
    assert second.prev_manifest_hash == batches.manifest_hash(first)
    assert (second.batch_id, second.count) == ("t/0/10-14", 5)
    proofs = batches.aggregate([first, second], "blake3")
    for manifest, proof in zip([first, second], proofs, strict=True):
        assert merkle.verify_inclusion(
            batches.manifest_bytes(manifest), proof.index, proof.size,
            [bytes.fromhex(n) for n in proof.proof], bytes.fromhex(proof.root))


# -- a receipt states where the record is ----------------------------------------------------


def _receipt(records: list[Record], offset: int, *, legacy: bool = False
             ) -> tuple[Receipt, bytes]:
    """A true receipt of the record at ``offset``, without ledger; ``legacy``: a batch anchored
    before leaves carried offsets (the value alone is the leaf)."""
    manifest = batch_manifest("telemetry.v1", 3, records, T0_MS)
    leaves = [batches.leaf(o, value) for o, value in records]
    if legacy:
        leaves = [value for _, value in records]
        manifest = manifest.model_copy(update={"leaves": None,
                                               "root": merkle.root(leaves).hex()})
    _, proofs = merkle.tree(leaves)
    index = [o for o, _ in records].index(offset)
    aggregate = batches.aggregate([manifest], "blake3")[0]
    receipt = Receipt(
        record=RecordRef(topic="telemetry.v1", partition=3, offset=offset,
                         leaf_hash=merkle.BLAKE3.hash_leaf(leaves[index]).hex()),
        leaf_index=index, inclusion_proof=tuple(p.hex() for p in proofs[index]),
        manifest=manifest, aggregate=aggregate,
        ledger=LedgerRef(kind="file", ledger_id="0" * 64, entry="0"))
    return receipt, records[index][1]


# Offsets with gaps, as a compacted topic or transaction markers leave them.
GAPPY = [(o, f"record-{o}".encode()) for o in (100, 101, 104, 107, 108)]


@pytest.mark.parametrize("legacy", [False, True], ids=["offset-bound", "legacy-contiguous"])
def test_a_receipt_moved_to_another_place_fails(legacy: bool) -> None:
    receipt, value = _receipt(_records(range(100, 110)), 104, legacy=legacy)
    verify.verify_offline(receipt, value)
    for place in ({"offset": 107}, {"offset": 110}, {"partition": 2}, {"topic": "alerts.v1"}):
        moved = receipt.model_copy(update={"record": receipt.record.model_copy(update=place)})
        with pytest.raises(VerificationFailed, match=r"^(position|record hash|inclusion):"):
            verify.verify_offline(moved, value)


def test_offsets_with_gaps_are_bound_by_the_leaf() -> None:
    receipt, value = _receipt(GAPPY, 107)
    assert receipt.leaf_index == 3
    verify.verify_offline(receipt, value)
    # The leaf at index 3 is offset 107's and no other's, whatever the receipt claims.
    for offset in (103, 104, 106, 108):
        moved = receipt.model_copy(update={"record": receipt.record.model_copy(update={
            "offset": offset, "leaf_hash": merkle.BLAKE3.hash_leaf(
                batches.leaf(offset, value)).hex()})})
        with pytest.raises(VerificationFailed, match=r"^inclusion:"):
            verify.verify_offline(moved, value)


def test_a_legacy_batch_with_gaps_cannot_prove_a_position() -> None:
    receipt, value = _receipt(GAPPY, 107, legacy=True)
    with pytest.raises(VerificationFailed, match=r"^position: .* predates leaves bound"):
        verify.verify_offline(receipt, value)


# -- the file ledger, on its own ------------------------------------------------------------


@pytest.fixture
def ledger_with_entries(tmp_path: Path) -> FileLedger:
    ledger = FileLedger(tmp_path / "ledger")
    for n in range(3):
        manifest = batch_manifest("t", 0, _records(range(n * 10, n * 10 + 10)), T0_MS)
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
        FileLedger(ledger_with_entries.directory, writable=False).entries()


def test_ledger_verify_cli(ledger_with_entries: FileLedger, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{ledger_with_entries.directory}")
    assert main(["ledger", "verify"]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    rewrite_ledger(ledger_with_entries.directory, edit_second_root)
    assert main(["ledger", "verify"]) == 1
    assert "entry 1 was edited" in capsys.readouterr().err
