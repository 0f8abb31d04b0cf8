"""Errors of anchoring and verification, in the smartport error family."""

from __future__ import annotations

from smartport.errors import SmartportError


class VerificationFailed(SmartportError):
    """A receipt or a ledger did not verify; ``check`` names which check failed."""

    code = 1

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


class LedgerError(SmartportError):
    """The ledger cannot be opened, reached or written."""

    code = 3
