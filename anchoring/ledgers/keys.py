"""The file ledger's keys: Ed25519 key files, and a key history whose rotations the previous key
signs, so entries and checkpoints signed before a rotation still verify after it.

The ledger's identity is the fingerprint of its *first* key (``ledger.pub``); it does not
change on rotation. ``ledger.keys.jsonl`` lists the rotations: from which entry index a new key
signs, its public key, and the previous key's signature over both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from anchoring.errors import VerificationFailed
from schemas import encode
from smartport.ed25519 import fingerprint, raw_public, verify_signature

ROTATIONS = "ledger.keys.jsonl"


@dataclass(frozen=True, slots=True)
class Epoch:
    """A key and the first entry index it signs."""

    key_id: str
    key: Ed25519PublicKey
    from_entry: int


def _rotation_body(line: dict[str, Any]) -> bytes:
    return encode({k: line[k] for k in ("from_entry", "public_key", "prev_key_id")})


class KeyHistory:
    """The ledger's keys in order, each rotation checked against the key before it."""

    def __init__(self, genesis: Ed25519PublicKey, path: Path) -> None:
        self._path = path
        self.epochs = [Epoch(fingerprint(genesis), genesis, 0)]
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for number, text in enumerate(lines, start=1):
            try:
                line = json.loads(text)
                public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(line["public_key"]))
                from_entry = int(line["from_entry"])
                valid = (line["prev_key_id"] == self.current.key_id
                         and from_entry >= self.current.from_entry
                         and verify_signature(self.current.key, line["signature"],
                                              _rotation_body(line)))
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                raise VerificationFailed("ledger key history", f"rotation {number} of {path} "
                                         f"is not signed by key {self.current.key_id}")
            self.epochs.append(Epoch(fingerprint(public), public, from_entry))

    @property
    def ledger_id(self) -> str:
        return self.epochs[0].key_id

    @property
    def current(self) -> Epoch:
        return self.epochs[-1]

    def key(self, key_id: str) -> Ed25519PublicKey | None:
        return next((e.key for e in self.epochs if e.key_id == key_id), None)

    def signs_entry(self, index: int) -> Epoch:
        """The key that must sign entry ``index``: the last one rotated in at or before it."""
        return [e for e in self.epochs if e.from_entry <= index][-1]

    def rotate(self, private: Ed25519PrivateKey, new: Ed25519PublicKey, from_entry: int) -> None:
        """Record ``new`` as the key of entries from ``from_entry`` on, signed by ``private``
        (the current key)."""
        line: dict[str, Any] = {"from_entry": from_entry, "public_key": raw_public(new),
                                "prev_key_id": self.current.key_id}
        line["signature"] = private.sign(_rotation_body(line)).hex()
        with self._path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.epochs.append(Epoch(fingerprint(new), new, from_entry))
