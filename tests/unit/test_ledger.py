"""The file ledger against an operator who cuts, replaces or rewrites it, and a bad day (a
crash mid-append, a key rotation): checkpoints, the expected key, torn lines, key history."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchoring import batches
from anchoring.errors import VerificationFailed
from anchoring.ledgers import keys
from anchoring.ledgers.file import ENTRIES, PRIVATE_KEY, TORN, FileLedger, entry_hash
from deploy.cli import main
from schemas import LedgerRef, encode
from smartport import ed25519
from tests.helpers import batch_manifest

T0 = datetime(2026, 11, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def _anchor(ledger: FileLedger, n: int) -> LedgerRef:
    records = [(o, f"r{o}".encode()) for o in range(n * 10, n * 10 + 10)]
    manifest = batch_manifest("t", 0, records, T0_MS)
    proof = batches.aggregate([manifest], "blake3")[0]
    return ledger.anchor(proof.root, "blake3", [(manifest, proof)])


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileLedger:
    monkeypatch.setenv("SMARTPORT_STATE_DIR", str(tmp_path / "verifier-state"))
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{tmp_path / 'ledger'}")
    made = FileLedger(tmp_path / "ledger")
    for n in range(3):
        _anchor(made, n)
    return made


def _lines(ledger: FileLedger) -> list[str]:
    return (ledger.directory / ENTRIES).read_text().splitlines()


def _write(ledger: FileLedger, lines: list[str]) -> None:
    (ledger.directory / ENTRIES).write_text("".join(line + "\n" for line in lines))


def _verify(*args: str) -> int:
    return main(["ledger", "verify", *args])


def test_a_ledger_cut_short_or_removed_is_caught_by_what_the_verifier_remembers(
    ledger: FileLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify() == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    _write(ledger, _lines(ledger)[:2])
    assert _verify() == 1
    assert "ledger consistency: the ledger holds 2 entries" in capsys.readouterr().err
    (ledger.directory / ENTRIES).unlink()
    assert _verify() == 1
    assert "it was cut short" in capsys.readouterr().err


def test_a_held_checkpoint_catches_a_history_rewritten_and_re_signed_with_the_key(
    ledger: FileLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever holds the key can re-sign a whole new history: the chain and signatures are
    then intact, and only a checkpoint kept by someone else tells."""
    held = tmp_path / "checkpoint.json"
    assert main(["ledger", "checkpoint", "-o", str(held)]) == 0
    private = ed25519.load_private(ledger.directory / PRIVATE_KEY)
    rewritten, prev = [], None
    for line in _lines(ledger):
        entry = json.loads(line)
        entry["root"] = "11" * 32 if entry["index"] == 1 else entry["root"]
        entry["prev"] = prev
        entry["entry_hash"] = prev = entry_hash(entry)
        entry["signature"] = private.sign(bytes.fromhex(prev)).hex()
        rewritten.append(json.dumps(entry))
    _write(ledger, rewritten)
    assert _verify("--no-remember") == 0, "a re-signed history is intact on its own"
    assert _verify("--no-remember", "--checkpoint", str(held)) == 1
    assert "entries are not the ones the checkpoint" in capsys.readouterr().err


def test_a_ledger_made_with_another_key_fails_the_expected_key(
    ledger: FileLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = ledger.ledger_id
    assert _verify("--expect-key", genuine) == 0
    for name in (ENTRIES, PRIVATE_KEY, "ledger.pub"):
        (ledger.directory / name).unlink()
    _anchor(FileLedger(ledger.directory), 0)  # a stranger's ledger in its place
    assert _verify("--expect-key", genuine) == 1
    assert f"you expect {genuine}" in capsys.readouterr().err


def test_checkpoints_prove_the_ledger_only_grew(ledger: FileLedger, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert main(["ledger", "checkpoint", "-o", str(old)]) == 0
    ref = _anchor(ledger, 3)
    assert ref.checkpoint is not None
    assert ref.checkpoint.size == 4, "every anchor publishes the checkpoint after its entry"
    new.write_bytes(encode(ref.checkpoint))
    assert main(["ledger", "consistency", str(old), str(new)]) == 0
    assert "consistent: size 3 → 4" in capsys.readouterr().out
    assert main(["ledger", "consistency", str(new), str(old)]) == 1
    forged = ref.checkpoint.model_copy(update={"root": "22" * 32})
    new.write_bytes(encode(forged))
    assert main(["ledger", "consistency", str(old), str(new)]) == 1
    assert "checkpoint signature" in capsys.readouterr().err


def test_a_torn_last_line_is_set_aside_and_anchoring_goes_on(
    ledger: FileLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    torn = _lines(ledger)[2][:57].encode()
    with (ledger.directory / ENTRIES).open("ab") as handle:
        handle.write(torn)  # a crash mid-append
    assert _verify("--no-remember") == 0
    assert "the last 57 bytes are a torn line" in capsys.readouterr().err
    reopened = FileLedger(ledger.directory)
    assert _anchor(reopened, 3).entry == "3"
    assert (ledger.directory / TORN).read_bytes() == torn + b"\n"
    assert _verify("--no-remember") == 0
    assert "intact: 4 entries" in capsys.readouterr().out


def test_anchoring_reads_each_entry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """Anchoring cost does not grow with the ledger: what was verified is not read again."""
    ledger = FileLedger(tmp_path / "ledger")
    checked: list[int] = []
    check = ledger._check_entry

    def counting(entry: dict[str, object], index: int, previous: object) -> None:
        checked.append(index)
        check(entry, index, previous)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger, "_check_entry", counting)
    for n in range(40):
        _anchor(ledger, n)
        assert ledger.find(batches.batch_prefix("t", 0, n * 10)) is not None
    assert checked == list(range(40))


def test_receipts_signed_before_a_key_rotation_still_verify(
    ledger: FileLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ledger.ledger_id
    before = FileLedger(ledger.directory, writable=False).entries()[1]
    assert main(["ledger", "rotate-key"]) == 0
    rotated = FileLedger(ledger.directory)
    assert rotated.ledger_id == first, "the ledger id outlives its keys"
    ref = _anchor(rotated, 3)
    verifier = FileLedger(ledger.directory, writable=False)
    verifier.check(LedgerRef(kind="file", ledger_id=first, entry="1"), before["root"], "blake3")
    assert ref.checkpoint is not None
    verifier.check(ref, verifier.entries()[3]["root"], "blake3")
    assert verifier.entries()[3]["key_id"] != verifier.entries()[1]["key_id"]
    capsys.readouterr()
    assert _verify("--expect-key", first) == 0
    assert "after 1 rotation(s)" in capsys.readouterr().out


def test_a_rotation_not_signed_by_the_previous_key_is_refused(
    ledger: FileLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    history = keys.KeyHistory(stranger.public_key(), ledger.directory / keys.ROTATIONS)
    history.rotate(stranger, Ed25519PrivateKey.generate().public_key(), 3)
    assert _verify("--no-remember") == 1
    assert "ledger key history: rotation 1" in capsys.readouterr().err


def test_a_non_numeric_entry_in_a_receipt_is_a_clear_failure(ledger: FileLedger) -> None:
    with pytest.raises(VerificationFailed, match=r"^ledger entry missing: 'x1'"):
        ledger.check(LedgerRef(kind="file", ledger_id=ledger.ledger_id, entry="x1"),
                     "00" * 32, "blake3")


@pytest.mark.parametrize("text", [
    "eip155:31337:0x5FbDB2315678afecb367f032d93F642f64180aa3\n",  # a trailing newline
    "eip155:31337:0x5FbDB2315678afecb367f032d93F642f64180aa3x",
    "eip155::0x5FbDB2315678afecb367f032d93F642f64180aa3",
])
def test_an_evm_ledger_id_is_exactly_caip10(text: str) -> None:
    from anchoring.ledgers.evm import AccountId

    with pytest.raises(VerificationFailed, match="is not an EVM ledger id"):
        AccountId.parse(text)
    assert str(AccountId.parse(text.rstrip("\nx").replace("::", ":31337:"))).startswith(
        "eip155:31337:0x")
