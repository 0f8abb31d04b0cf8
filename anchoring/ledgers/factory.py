"""The ledger the settings name: ``file://PATH`` (the default, in the state directory) or
``evm+http(s)://host:port`` with a signing key from the settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from anchoring.errors import LedgerError
from anchoring.ledgers.base import Ledger
from smartport.errors import ConfigError
from smartport.redaction import redact_url
from smartport.settings import Settings


def open_ledger(settings: Settings, *, writable: bool = True) -> Ledger:
    url = settings.resolved_ledger_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        from anchoring.ledgers.file import FileLedger

        return FileLedger(Path(parts.path), writable=writable)
    if parts.scheme in ("evm+http", "evm+https"):
        from anchoring.ledgers.evm import EvmLedger

        return EvmLedger(f"{parts.scheme.removeprefix('evm+')}://{parts.netloc}",
                         private_key=_evm_key(settings) if writable else None,
                         confirmations=settings.ledger_confirmations,
                         finality=settings.ledger_finality,
                         index_path=settings.state_dir / "anchoring"
                         / f"evm-{parts.port}-index.jsonl")
    raise ConfigError(f"ledger URL {redact_url(url)!r} must start with file:// or evm+http(s)://")


def own_ledger_id(settings: Settings) -> str:
    """The id of the ledger this installation anchors to: what its operator publishes for
    verifiers to trust, and what its own checks (the demo's reconciliation) trust."""
    return open_ledger(settings, writable=True).ledger_id


def _evm_key(settings: Settings) -> str:
    """The EVM signing key, from the setting or the file it names; never logged."""
    if settings.ledger_key is not None:
        return settings.ledger_key.get_secret_value()
    if settings.ledger_key_file is not None:
        try:
            return settings.ledger_key_file.read_text().strip()
        except OSError as exc:
            raise LedgerError(f"cannot read the EVM signing key file "
                              f"{settings.ledger_key_file}: {exc}") from None
    raise LedgerError("the EVM ledger needs a signing key: set SMARTPORT_LEDGER_KEY "
                      "or SMARTPORT_LEDGER_KEY_FILE")
