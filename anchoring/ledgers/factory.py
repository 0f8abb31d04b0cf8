"""The ledger the settings name: ``file://PATH`` (the default, in the state directory) or
``evm+http(s)://host:port`` with a signing key from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from anchoring.errors import LedgerError
from anchoring.ledgers.base import Ledger
from smartport.errors import ConfigError
from smartport.redaction import redact_url
from smartport.settings import Settings

if TYPE_CHECKING:
    from anchoring.ledgers.evm import EvmLedger
    from anchoring.witness import PeriodicWitness


def open_ledger(settings: Settings, *, writable: bool = True) -> Ledger:
    url = settings.resolved_ledger_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        from anchoring.ledgers.file import FileLedger

        return FileLedger(Path(parts.path), writable=writable)
    if parts.scheme in ("evm+http", "evm+https"):
        return _open_evm(settings, url, writable=writable)
    raise ConfigError(f"ledger URL {redact_url(url)!r} must start with file:// or evm+http(s)://")


def open_witness(settings: Settings, *, writable: bool = True) -> EvmLedger | None:
    """The EVM chain that witnesses a file ledger's checkpoints (``ledger_witness_url``)."""
    if not settings.ledger_witness_url:
        return None
    if urlsplit(settings.ledger_witness_url).scheme not in ("evm+http", "evm+https"):
        raise ConfigError(f"ledger_witness_url {redact_url(settings.ledger_witness_url)!r} "
                          "must start with evm+http(s)://")
    return _open_evm(settings, settings.ledger_witness_url, writable=writable)


def periodic_witness(settings: Settings, ledger: Ledger) -> PeriodicWitness | None:
    """The anchorer's witness of the file ledger's checkpoints, when a chain is configured."""
    from anchoring.ledgers.file import FileLedger
    from anchoring.witness import PeriodicWitness

    chain = open_witness(settings)
    if chain is None:
        return None
    if not isinstance(ledger, FileLedger):
        raise ConfigError("ledger_witness_url witnesses a file ledger's checkpoints; with an "
                          "EVM ledger_url every anchor is already on the chain: unset one")
    return PeriodicWitness(chain, settings.state_dir / "anchoring" / "witnessed.jsonl",
                           settings.ledger_witness_seconds)


def _open_evm(settings: Settings, url: str, *, writable: bool) -> EvmLedger:
    from anchoring.ledgers.evm import EvmLedger

    parts = urlsplit(url)
    return EvmLedger(f"{parts.scheme.removeprefix('evm+')}://{parts.netloc}",
                     private_key=_evm_key(settings) if writable else None,
                     confirmations=settings.ledger_confirmations,
                     finality=settings.ledger_finality,
                     index_path=settings.state_dir / "anchoring" / f"evm-{parts.port}-index.jsonl")


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
