"""A file ledger's checkpoints witnessed on an EVM chain.

A signed checkpoint that the operator hands out proves what the ledger held, but only to those
who were handed it. Witnessed, its digest sits in a transaction of the operator's account on a
public chain, for anyone to find and nobody to take back: a ledger later cut short or rewritten
no longer matches a checkpoint the operator published for good, at a time the chain fixes.

The digest is domain-separated, so it can never be read as a batch root:
``SHA-256("smartport/ledger-checkpoint/v1\\n" || canonical bytes of the signed checkpoint)``,
anchored like a batch root (``anchoring/ledgers/evm.py``) with the sha256 algorithm id.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection
from pathlib import Path

from anchoring.errors import VerificationFailed
from anchoring.ledgers.evm import EvmLedger
from anchoring.verify import check_trusted
from schemas import LedgerCheckpoint, WitnessedCheckpoint, encode

DOMAIN = b"smartport/ledger-checkpoint/v1\n"


def checkpoint_digest(checkpoint: LedgerCheckpoint) -> str:
    return hashlib.sha256(DOMAIN + encode(checkpoint)).hexdigest()


def witness(checkpoint: LedgerCheckpoint, chain: EvmLedger) -> WitnessedCheckpoint:
    """Anchor the checkpoint's digest on ``chain``; returns once the transaction is final."""
    ref = chain.anchor(checkpoint_digest(checkpoint), "sha256", [])
    return WitnessedCheckpoint(checkpoint=checkpoint, witness=ref)


def check_witness(witnessed: WitnessedCheckpoint, chain: EvmLedger,
                  trusted: Collection[str]) -> None:
    """Raises VerificationFailed unless a trusted account witnessed exactly this checkpoint."""
    try:
        check_trusted(witnessed.witness, trusted)
        chain.check(witnessed.witness, checkpoint_digest(witnessed.checkpoint), "sha256")
    except VerificationFailed as exc:
        raise VerificationFailed("witness", str(exc)) from None


class PeriodicWitness:
    """The anchorer's witness: at most every ``every_s`` seconds, and only when the ledger
    grew, the latest checkpoint goes to the chain and its record to ``log_path`` (JSON lines),
    for the operator to publish."""

    def __init__(self, chain: EvmLedger, log_path: Path, every_s: float) -> None:
        self._chain = chain
        self._log_path = log_path
        self._every_s = every_s
        self._last_at: float | None = None
        self._last_size = _last_witnessed_size(log_path)

    def due(self, size: int, now: float) -> bool:
        return size > self._last_size and (
            self._last_at is None or now - self._last_at >= self._every_s)

    def offer(self, checkpoint: LedgerCheckpoint) -> WitnessedCheckpoint | None:
        now = time.monotonic()
        if not self.due(checkpoint.size, now):
            return None
        witnessed = witness(checkpoint, self._chain)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as handle:
            handle.write(encode(witnessed) + b"\n")
        self._last_at, self._last_size = now, checkpoint.size
        return witnessed


def _last_witnessed_size(log_path: Path) -> int:
    try:
        lines = log_path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(line)["checkpoint"]["size"] for line in lines if line.strip()),
               default=0)
