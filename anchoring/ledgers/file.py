"""The embedded ledger: an append-only, hash-chained JSON Lines log signed with Ed25519.

Each entry carries its index, the previous entry's hash, the anchored root, the batches it
covers and the id of the key that signed it; its hash is SHA-256 over its canonical bytes and
is signed with that key. Any edit, removal or reorder of an entry is detected on read and by
``smartport ledger verify``. The entries' hashes are also the leaves of an RFC 9162 tree whose
signed root (a ``LedgerCheckpoint``) is published with every anchor: whoever keeps one can later
catch the ledger cut short or rewritten, however it was re-signed.

Reading is incremental: what was verified stays verified, and only appended bytes are read,
so anchoring does not slow down as the ledger grows. A torn last line (a crash mid-append) is
set aside in ``ledger.jsonl.torn`` when a writer opens the ledger, and appending continues.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchoring import merkle
from anchoring.errors import LedgerError, VerificationFailed
from anchoring.ledgers import keys
from anchoring.ledgers.base import Anchored
from schemas import AnchorRecord, LedgerCheckpoint, LedgerRef, encode
from schemas.anchoring import HashAlgorithm
from smartport import ed25519

log = logging.getLogger(__name__)

ENTRIES = "ledger.jsonl"
TORN = "ledger.jsonl.torn"
PRIVATE_KEY = "ledger.key"
PUBLIC_KEY = "ledger.pub"
_SIGNED_FIELDS = ("index", "prev", "root", "hash_alg", "anchored_at", "records", "key_id")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the signed fields (entries from before key ids have no ``key_id``)."""
    return hashlib.sha256(encode({k: entry[k] for k in _SIGNED_FIELDS if k in entry})).hexdigest()


def checkpoint_body(checkpoint: LedgerCheckpoint) -> bytes:
    """What a checkpoint's signature covers: every field but the signature."""
    return encode(checkpoint.model_copy(update={"signature": None}))


class FileLedger:
    kind = "file"

    def __init__(self, directory: Path, *, writable: bool = True) -> None:
        self.directory = directory
        self._entries_path = directory / ENTRIES
        public = directory / PUBLIC_KEY
        if writable and not public.exists():
            self._create_key()
        try:
            genesis = ed25519.load_public(public)
        except FileNotFoundError:
            raise LedgerError(f"no ledger at {directory} (missing {PUBLIC_KEY}): check the "
                              "ledger URL, or run the anchorer once to create it") from None
        self.keys = keys.KeyHistory(genesis, directory / keys.ROTATIONS)
        self._private: Ed25519PrivateKey | None = None
        if writable:
            self._private = self._current_private_key()
        # What has been read and verified so far.
        self._verified: list[dict[str, Any]] = []
        self._verified_bytes = 0
        self._last_line = b""
        self._tree = merkle.CompactRange(merkle.SHA256)
        self._by_batch: dict[str, int] = {}  # batch prefix "topic/partition/first-" → entry
        self.torn_tail = b""  # bytes after the last newline: a crash mid-append

    def _create_key(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        key_path = self.directory / PRIVATE_KEY
        if key_path.exists():
            raise LedgerError(f"{key_path} exists without {PUBLIC_KEY}: restore the public key "
                              "rather than start a new ledger beside the old one")
        ed25519.write_private(key_path, private)
        (self.directory / PUBLIC_KEY).write_bytes(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _current_private_key(self) -> Ed25519PrivateKey:
        path = self.directory / PRIVATE_KEY
        staged = path.with_suffix(".new")
        if staged.exists() and ed25519.fingerprint(
                ed25519.load_private(staged).public_key()) == self.keys.current.key_id:
            staged.replace(path)  # a rotation was recorded, then interrupted: finish it
        private = ed25519.load_private(path)
        if ed25519.fingerprint(private.public_key()) != self.keys.current.key_id:
            raise LedgerError(f"{path} is not the ledger's current key "
                              f"{self.keys.current.key_id} (see {keys.ROTATIONS})")
        return private

    @property
    def ledger_id(self) -> str:
        """The fingerprint of the ledger's first key: SHA-256 of its raw public bytes."""
        return self.keys.ledger_id

    # -- reading and verifying -------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry, each checked once (chain, hash, signature); later calls read
        only what was appended since. Raises VerificationFailed."""
        try:
            handle = self._entries_path.open("rb")
        except FileNotFoundError:
            if self._verified:
                raise VerificationFailed("ledger chain", f"{self._entries_path} is gone, "
                                         f"it held {len(self._verified)} entries") from None
            return []
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size < self._verified_bytes:
                raise VerificationFailed("ledger chain", f"{self._entries_path} shrank from "
                                         f"{self._verified_bytes} to {size} bytes: entries "
                                         "were removed")
            start = self._verified_bytes - len(self._last_line)
            handle.seek(start)
            data = handle.read()
        if not data.startswith(self._last_line):
            raise VerificationFailed("ledger chain", f"entry {len(self._verified) - 1} of "
                                     f"{self._entries_path} changed after it was verified")
        complete, newline, self.torn_tail = data[len(self._last_line):].rpartition(b"\n")
        for line in complete.split(b"\n") if newline else []:
            self._add_verified(line)
        return self._verified

    def _add_verified(self, line: bytes) -> None:
        index = len(self._verified)
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise VerificationFailed("ledger entry", f"line {index + 1} of "
                                     f"{self._entries_path} is not JSON: {exc}") from None
        if not isinstance(entry, dict):
            raise VerificationFailed("ledger entry", f"line {index + 1} of "
                                     f"{self._entries_path} is not an entry")
        self._check_entry(entry, index, self._verified[-1] if self._verified else None)
        self._verified.append(entry)
        self._verified_bytes += len(line) + 1
        self._last_line = line + b"\n"
        self._tree.append(bytes.fromhex(entry["entry_hash"]))
        for record in entry["records"]:
            batch_id = record["manifest"]["batch_id"]
            self._by_batch.setdefault(batch_id[:batch_id.rindex("-") + 1], index)

    def _check_entry(self, entry: dict[str, Any], index: int,
                     previous: dict[str, Any] | None) -> None:
        if entry.get("index") != index:
            raise VerificationFailed("ledger chain", f"entry at position {index} has index "
                                     f"{entry.get('index')}: entries were removed or reordered")
        want_prev = previous["entry_hash"] if previous else None
        if entry.get("prev") != want_prev:
            raise VerificationFailed("ledger chain", f"entry {index} points back to "
                                     f"{entry.get('prev')}, want {want_prev}")
        missing = [k for k in (*_SIGNED_FIELDS[:-1], "entry_hash") if k not in entry]
        if missing:
            raise VerificationFailed("ledger entry", f"entry {index} lacks {', '.join(missing)}")
        computed = entry_hash(entry)
        if entry.get("entry_hash") != computed:
            raise VerificationFailed("ledger entry", f"entry {index} was edited: its hash is "
                                     f"{computed}, recorded {entry.get('entry_hash')}")
        epoch = self.keys.signs_entry(index)
        named = entry.get("key_id", self.keys.ledger_id)
        if named != epoch.key_id or not ed25519.verify_signature(
                epoch.key, str(entry.get("signature")), bytes.fromhex(computed)):
            raise VerificationFailed("ledger signature", f"entry {index} is not signed by "
                                     f"ledger key {epoch.key_id}")

    def find(self, batch_prefix: str) -> list[AnchorRecord] | None:
        self.entries()
        index = self._by_batch.get(batch_prefix)
        if index is None:
            return None
        entry, ref = self._verified[index], self._ref(index)
        return [AnchorRecord.model_validate_json(
            json.dumps({**r, "ledger": ref.model_dump(mode="json", exclude_none=True)}))
            for r in entry["records"]]

    def _ref(self, index: int) -> LedgerRef:
        return LedgerRef(kind="file", ledger_id=self.ledger_id, entry=str(index),
                         checkpoint=self._checkpoint_at(index + 1) if self._private else None)

    # -- checkpoints -----------------------------------------------------------------------

    def _leaves(self, size: int) -> list[bytes]:
        """The tree leaves of the first ``size`` verified entries: their hashes."""
        return [bytes.fromhex(e["entry_hash"]) for e in self._verified[:size]]

    def _prefix_root(self, size: int) -> bytes:
        if size == len(self._verified):
            return self._tree.root()  # O(log n): the common case, the whole ledger
        return merkle.root(self._leaves(size), merkle.SHA256)

    def _unsigned(self, size: int, time: datetime | None) -> LedgerCheckpoint:
        """The checkpoint of the first ``size`` entries, stamped ``time`` or, by default, with
        the time of the last of them (so the same ledger always gives the same bytes)."""
        last = self._verified[size - 1] if size else None
        if time is None:
            time = datetime.fromisoformat(last["anchored_at"]) if last else datetime.now(UTC)
        return LedgerCheckpoint(ledger_id=self.ledger_id, size=size,
                                root=self._prefix_root(size).hex(),
                                head=last["entry_hash"] if last else None,
                                key_id=self.keys.current.key_id, time=time)

    def _checkpoint_at(self, size: int) -> LedgerCheckpoint:
        """The signed checkpoint of the first ``size`` entries."""
        if self._private is None:
            raise LedgerError("a checkpoint is signed by the ledger's key: open it writable")
        unsigned = self._unsigned(size, None)
        return unsigned.model_copy(update={
            "signature": self._private.sign(checkpoint_body(unsigned)).hex()})

    def checkpoint(self) -> LedgerCheckpoint:
        """The signed checkpoint of the whole ledger as it is now."""
        return self._checkpoint_at(len(self.entries()))

    def observation(self) -> LedgerCheckpoint:
        """An unsigned checkpoint of the ledger as it is now: what a verifier remembers."""
        return self._unsigned(len(self.entries()), datetime.now(UTC))

    def check_checkpoint(self, checkpoint: LedgerCheckpoint, *, signed: bool = True) -> None:
        """``checkpoint`` is signed by one of this ledger's keys (unless it is the verifier's
        own memory, ``signed=False``) and the ledger still begins with the entries it saw:
        it was not cut short or rewritten since."""
        if signed:
            self.check_signed(checkpoint)
        entries = self.entries()
        if len(entries) < checkpoint.size:
            raise VerificationFailed("ledger consistency", f"the ledger holds {len(entries)} "
                                     f"entries, a checkpoint of {checkpoint.time:%Y-%m-%d %H:%M}"
                                     f" saw {checkpoint.size}: it was cut short")
        if self._prefix_root(checkpoint.size).hex() != checkpoint.root:
            raise VerificationFailed("ledger consistency", f"the first {checkpoint.size} "
                                     "entries are not the ones the checkpoint of "
                                     f"{checkpoint.time:%Y-%m-%d %H:%M} saw: rewritten")

    def check_signed(self, checkpoint: LedgerCheckpoint) -> None:
        if checkpoint.ledger_id != self.ledger_id:
            raise VerificationFailed("ledger", f"the checkpoint is of ledger "
                                     f"{checkpoint.ledger_id}, this is {self.ledger_id}")
        key = self.keys.key(checkpoint.key_id)
        if key is None or not ed25519.verify_signature(key, checkpoint.signature or "",
                                                    checkpoint_body(checkpoint)):
            raise VerificationFailed("checkpoint signature", "the checkpoint is not signed by "
                                     f"a key of ledger {self.ledger_id}")

    def consistency_proof(self, old: LedgerCheckpoint, new: LedgerCheckpoint) -> list[bytes]:
        """RFC 9162 proof that ``new`` extends ``old``, from this ledger's entries; raises
        VerificationFailed unless both are signed checkpoints of it and the proof holds."""
        for checkpoint in (old, new):
            self.check_signed(checkpoint)
        entries = self.entries()
        if not old.size <= new.size <= len(entries):
            raise VerificationFailed("ledger consistency", f"sizes {old.size} → {new.size} "
                                     f"cannot be proven from {len(entries)} entries")
        proof = merkle.consistency_proof(self._leaves(new.size), old.size, merkle.SHA256)
        if not merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root),
                                         bytes.fromhex(new.root), proof, merkle.SHA256):
            raise VerificationFailed("ledger consistency", f"the ledger of size {new.size} "
                                     f"does not extend the one of size {old.size}: rewritten")
        return proof

    # -- writing ---------------------------------------------------------------------------

    def _set_aside_torn_tail(self) -> None:
        with (self.directory / TORN).open("ab") as aside:
            aside.write(self.torn_tail + b"\n")
        with self._entries_path.open("r+b") as handle:
            handle.truncate(self._verified_bytes)
            os.fsync(handle.fileno())
        log.warning("the ledger's last line was torn (a crash mid-append): set aside",
                    extra={"bytes": len(self.torn_tail), "kept_in": str(self.directory / TORN)})
        self.torn_tail = b""

    def anchor(self, root: str, hash_alg: HashAlgorithm, batches: Anchored) -> LedgerRef:
        if self._private is None:
            raise LedgerError("this ledger was opened read-only")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time, across processes
            entries = self.entries()
            if self.torn_tail:
                self._set_aside_torn_tail()
            entry: dict[str, Any] = {
                "index": len(entries),
                "prev": entries[-1]["entry_hash"] if entries else None,
                "root": root,
                "hash_alg": hash_alg,
                "anchored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "records": [{"manifest": json.loads(encode(m)), "aggregate": json.loads(encode(a))}
                            for m, a in batches],
                "key_id": self.keys.current.key_id,
            }
            entry["entry_hash"] = entry_hash(entry)
            entry["signature"] = self._private.sign(bytes.fromhex(entry["entry_hash"])).hex()
            with self._entries_path.open("ab") as handle:
                handle.write(encode(entry) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            self.entries()
        return self._ref(entry["index"])

    def rotate_key(self) -> str:
        """Sign a new key into the key history; it signs every entry from the next one on.
        Returns the new key's id. Entries and checkpoints signed before stay valid."""
        if self._private is None:
            raise LedgerError("this ledger was opened read-only")
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            new = Ed25519PrivateKey.generate()
            staged = (self.directory / PRIVATE_KEY).with_suffix(".new")
            ed25519.write_private(staged, new)
            self.keys.rotate(self._private, new.public_key(), len(self.entries()))
            staged.replace(self.directory / PRIVATE_KEY)
            self._private = new
        return self.keys.current.key_id

    # -- verification ----------------------------------------------------------------------

    def check(self, ref: LedgerRef, root: str, hash_alg: HashAlgorithm) -> None:
        if ref.kind != "file" or ref.ledger_id != self.ledger_id:
            raise VerificationFailed("ledger", f"the receipt points at {ref.kind} ledger "
                                     f"{ref.ledger_id}, this is file ledger {self.ledger_id}")
        entries = self.entries()
        if not ref.entry.isdigit():
            raise VerificationFailed("ledger entry missing", f"{ref.entry!r} is not an entry "
                                     "index of a file ledger")
        index = int(ref.entry)
        if not 0 <= index < len(entries):
            raise VerificationFailed("ledger entry missing", f"entry {index} is not in the "
                                     f"ledger ({len(entries)} entries)")
        entry = entries[index]
        if (entry["root"], entry["hash_alg"]) != (root, hash_alg):
            raise VerificationFailed("ledger entry different", f"entry {index} anchors "
                                     f"{entry['hash_alg']}:{entry['root']}, the receipt's "
                                     f"aggregate root is {hash_alg}:{root}")
        if ref.checkpoint is not None:
            self.check_checkpoint(ref.checkpoint)
