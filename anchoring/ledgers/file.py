"""The embedded ledger: an append-only, hash-chained JSON Lines log signed with Ed25519.

Each entry carries its index, the previous entry's hash, the anchored root and the batches it
covers; its hash is SHA-256 over its canonical bytes and is signed with the ledger's key. Any
edit, removal or reorder of an entry is detected on read and by ``smartport ledger verify``.
It is tamper-evident, not trustless: whoever holds the key can rewrite the whole log, so trade
partners who do not trust the operator should verify against an EVM ledger.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from anchoring.errors import LedgerError, VerificationFailed
from anchoring.ledgers.base import Anchored
from schemas import AnchorRecord, LedgerRef, encode
from schemas.anchoring import HashAlgorithm

ENTRIES = "ledger.jsonl"
PRIVATE_KEY = "ledger.key"
PUBLIC_KEY = "ledger.pub"
_SIGNED_FIELDS = ("index", "prev", "root", "hash_alg", "anchored_at", "records")


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(encode({k: entry[k] for k in _SIGNED_FIELDS})).hexdigest()


class FileLedger:
    kind = "file"

    def __init__(self, directory: Path, *, writable: bool = True) -> None:
        self.directory = directory
        self._entries = directory / ENTRIES
        public = directory / PUBLIC_KEY
        if writable and not public.exists():
            self._create_key()
        try:
            key = serialization.load_pem_public_key(public.read_bytes())
        except FileNotFoundError:
            raise LedgerError(f"no ledger at {directory} (missing {PUBLIC_KEY}): check the "
                              "ledger URL, or run the anchorer once to create it") from None
        if not isinstance(key, Ed25519PublicKey):
            raise LedgerError(f"{public} is not an Ed25519 public key")
        self._public = key
        self._private: Ed25519PrivateKey | None = None
        if writable:
            private = serialization.load_pem_private_key(
                (directory / PRIVATE_KEY).read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise LedgerError(f"{directory / PRIVATE_KEY} is not an Ed25519 private key")
            self._private = private

    def _create_key(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        key_path = self.directory / PRIVATE_KEY
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        (self.directory / PUBLIC_KEY).write_bytes(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    @property
    def ledger_id(self) -> str:
        """The fingerprint of the signing key: SHA-256 of its raw public bytes."""
        raw = self._public.public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, after checking the whole chain and every signature."""
        try:
            lines = self._entries.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise VerificationFailed("ledger entry", f"line {number} of {self._entries} "
                                         f"is not JSON: {exc}") from None
            self._check_entry(entry, len(entries), entries[-1] if entries else None)
            entries.append(entry)
        return entries

    def _check_entry(self, entry: dict[str, Any], index: int,
                     previous: dict[str, Any] | None) -> None:
        if entry.get("index") != index:
            raise VerificationFailed("ledger chain", f"entry at position {index} has index "
                                     f"{entry.get('index')}: entries were removed or reordered")
        want_prev = previous["entry_hash"] if previous else None
        if entry.get("prev") != want_prev:
            raise VerificationFailed("ledger chain", f"entry {index} points back to "
                                     f"{entry.get('prev')}, want {want_prev}")
        computed = entry_hash(entry)
        if entry.get("entry_hash") != computed:
            raise VerificationFailed("ledger entry", f"entry {index} was edited: its hash is "
                                     f"{computed}, recorded {entry.get('entry_hash')}")
        try:
            self._public.verify(bytes.fromhex(entry["signature"]), bytes.fromhex(computed))
        except (InvalidSignature, ValueError, KeyError):
            raise VerificationFailed("ledger signature", f"entry {index} is not signed by "
                                     f"ledger key {self.ledger_id}") from None

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        for entry in self.entries():
            if any(r["manifest"]["batch_id"].startswith(batch_prefix) for r in entry["records"]):
                ref = self._ref(entry["index"])
                return [AnchorRecord.model_validate_json(
                    json.dumps({**r, "ledger": ref.model_dump()})) for r in entry["records"]]
        return None

    def _ref(self, index: int) -> LedgerRef:
        return LedgerRef(kind="file", ledger_id=self.ledger_id, entry=str(index))

    def anchor(self, root: str, hash_alg: HashAlgorithm, batches: Anchored) -> LedgerRef:
        if self._private is None:
            raise LedgerError("this ledger was opened read-only")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time, across processes
            entries = self.entries()
            entry: dict[str, Any] = {
                "index": len(entries),
                "prev": entries[-1]["entry_hash"] if entries else None,
                "root": root,
                "hash_alg": hash_alg,
                "anchored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "records": [{"manifest": json.loads(encode(m)), "aggregate": json.loads(encode(a))}
                            for m, a in batches],
            }
            entry["entry_hash"] = entry_hash(entry)
            entry["signature"] = self._private.sign(bytes.fromhex(entry["entry_hash"])).hex()
            with self._entries.open("ab") as handle:
                handle.write(encode(entry) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        return self._ref(entry["index"])

    def check(self, ref: LedgerRef, root: str, hash_alg: HashAlgorithm) -> None:
        if ref.kind != "file" or ref.ledger_id != self.ledger_id:
            raise VerificationFailed("ledger", f"the receipt points at {ref.kind} ledger "
                                     f"{ref.ledger_id}, this is file ledger {self.ledger_id}")
        entries = self.entries()
        index = int(ref.entry)
        if not 0 <= index < len(entries):
            raise VerificationFailed("ledger entry missing", f"entry {index} is not in the "
                                     f"ledger ({len(entries)} entries)")
        entry = entries[index]
        if (entry["root"], entry["hash_alg"]) != (root, hash_alg):
            raise VerificationFailed("ledger entry different", f"entry {index} anchors "
                                     f"{entry['hash_alg']}:{entry['root']}, the receipt's "
                                     f"aggregate root is {hash_alg}:{root}")
