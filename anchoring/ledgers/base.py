"""The interface every ledger back-end implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas import AggregateProof, AnchorManifest, AnchorRecord, LedgerRef
from schemas.anchoring import HashAlgorithm

# A ledger entry anchors one aggregate root; these are the batches it covers.
Anchored = Sequence[tuple[AnchorManifest, AggregateProof]]


class Ledger(Protocol):
    kind: str

    @property
    def ledger_id(self) -> str: ...

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        """The records of the entry anchoring a batch whose id starts with ``batch_prefix``."""

    def anchor(self, root: str, hash_alg: HashAlgorithm, batches: Anchored) -> LedgerRef:
        """Write one entry for ``root``; returns only once the ledger confirmed it."""

    def check(self, ref: LedgerRef, root: str, hash_alg: HashAlgorithm) -> None:
        """Raise VerificationFailed unless ``ref`` is an intact entry anchoring ``root``."""
