"""`smartport ledger verify` for a file ledger: the whole chain, the key a verifier expects,
and consistency with every checkpoint it was given or remembers from its last run (trust on
first use, as an SSH client remembers a host key), so a ledger cut short, removed or rewritten
and re-signed since is caught."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from anchoring.errors import VerificationFailed
from anchoring.ledgers.file import FileLedger
from schemas import LedgerCheckpoint, Receipt, WitnessedCheckpoint, encode
from smartport.errors import InputRejected
from smartport.files import read_bounded

_MAX_FILE_BYTES = 1024 * 1024


@dataclass
class Audit:
    entries: int
    ledger_id: str
    key_id: str
    rotations: int
    torn_tail_bytes: int
    checked: list[str] = field(default_factory=list)  # what each checkpoint check was


def read_checkpoint(path: Path) -> LedgerCheckpoint:
    """A checkpoint file (`smartport ledger checkpoint`, or `ledger witness`), or a receipt,
    which carries the checkpoint of the ledger right after its entry."""
    data = read_bounded(path, _MAX_FILE_BYTES, "a checkpoint")
    for kind in (LedgerCheckpoint, WitnessedCheckpoint):
        try:
            parsed = kind.model_validate_json(data)
        except ValidationError:
            continue
        return parsed if isinstance(parsed, LedgerCheckpoint) else parsed.checkpoint
    try:
        checkpoint = Receipt.model_validate_json(data).ledger.checkpoint
    except ValidationError:
        checkpoint = None
    if checkpoint is None:
        raise InputRejected(f"{path} is neither a ledger checkpoint nor a receipt carrying one "
                            "(`smartport ledger checkpoint -o FILE` writes one)")
    return checkpoint


def read_witnessed(path: Path) -> WitnessedCheckpoint | None:
    """The checkpoint file as written by `smartport ledger witness`, or None if it is another
    kind of checkpoint file."""
    try:
        return WitnessedCheckpoint.model_validate_json(
            read_bounded(path, _MAX_FILE_BYTES, "a checkpoint"))
    except ValidationError:
        return None


def memory_path(verifier_dir: Path, ledger_id: str) -> Path:
    return verifier_dir / f"ledger-{ledger_id}.json"


def audit(ledger: FileLedger, *, expect_key: str | None, checkpoints: list[LedgerCheckpoint],
          verifier_dir: Path | None) -> Audit:
    """Raises VerificationFailed naming the first check that fails. With ``verifier_dir``,
    remembers what it saw there for the next run."""
    if expect_key is not None and ledger.ledger_id != expect_key:
        raise VerificationFailed("ledger", f"the ledger's key is {ledger.ledger_id}, you expect "
                                 f"{expect_key}: another ledger, or a new one in its place")
    entries = ledger.entries()
    report = Audit(len(entries), ledger.ledger_id, ledger.keys.current.key_id,
                   len(ledger.keys.epochs) - 1, len(ledger.torn_tail))
    for checkpoint in checkpoints:
        ledger.check_checkpoint(checkpoint)
        report.checked.append(f"signed checkpoint of size {checkpoint.size}")
    if verifier_dir is not None:
        memory = memory_path(verifier_dir, ledger.ledger_id)
        if memory.is_file():
            remembered = LedgerCheckpoint.model_validate_json(memory.read_bytes())
            ledger.check_checkpoint(remembered, signed=False)
            report.checked.append(f"size {remembered.size} seen on {remembered.time:%Y-%m-%d}")
        verifier_dir.mkdir(parents=True, exist_ok=True)
        staged = memory.with_suffix(".new")
        staged.write_bytes(encode(ledger.observation()))
        staged.replace(memory)
    return report
