"""The ledger interface and the choice of back-end by URL (``file://PATH`` or ``evm+http://``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from schemas import AggregateProof, AnchorManifest, AnchorRecord, LedgerRef
from smartport.errors import ConfigError
from smartport.settings import Settings

# A ledger entry anchors one aggregate root; these are the batches it covers.
Anchored = Sequence[tuple[AnchorManifest, AggregateProof]]


class Ledger(Protocol):
    kind: str

    @property
    def ledger_id(self) -> str: ...

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        """The records of the entry anchoring a batch whose id starts with ``batch_prefix``."""

    def anchor(self, root: str, hash_alg: str, batches: Anchored) -> LedgerRef:
        """Write one entry for ``root``; returns only once the ledger confirmed it."""

    def check(self, ref: LedgerRef, root: str, hash_alg: str) -> None:
        """Raise VerificationFailed unless ``ref`` is an intact entry anchoring ``root``."""


def open_ledger(settings: Settings, *, writable: bool = True) -> Ledger:
    url = settings.resolved_ledger_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        from anchoring.file_ledger import FileLedger

        return FileLedger(Path(parts.path), writable=writable)
    if parts.scheme in ("evm+http", "evm+https"):
        from anchoring.evm_ledger import EvmLedger

        return EvmLedger.from_settings(settings, writable=writable)
    raise ConfigError(f"ledger URL {url!r} must start with file:// or evm+http(s)://")
