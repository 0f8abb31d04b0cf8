"""Anchoring messages: batch manifests, their aggregation into one ledger entry, receipts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Message
from schemas.identifiers import UtcDatetime

HashHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
HashAlgorithm = Literal["blake3", "sha256"]
# What a batch's Merkle leaves are. "offset+value": the record's offset as 8 bytes big-endian,
# then its value, so a proof binds the position too; absent: the value alone (batches anchored
# before positions were bound, whose offsets are provable only when they have no gaps).
LeafFormat = Literal["offset+value"]
Offset = Annotated[int, Field(ge=0)]


class AnchorManifest(Message):
    """One Merkle batch: the values of a (topic, partition) offset range, in offset order."""

    batch_id: Annotated[str, Field(min_length=1, max_length=256)]
    topic: str
    partition: Offset
    first_offset: Offset
    last_offset: Offset
    count: Annotated[int, Field(ge=1)]
    root: HashHex
    hash_alg: HashAlgorithm
    prev_manifest_hash: HashHex | None = Field(
        None, description="hash of this partition's previous manifest: a hash chain")
    created_at: UtcDatetime = Field(description="timestamp of the batch's last Kafka record")
    leaves: LeafFormat | None = Field(None, description="what each leaf commits to")


class AggregateProof(Message):
    """Where a manifest sits in the Merkle tree whose root one ledger entry anchors."""

    root: HashHex
    index: Offset
    size: Annotated[int, Field(ge=1)]
    proof: tuple[HashHex, ...]


class LedgerCheckpoint(Message):
    """A signed statement of a file ledger's state (RFC 9162 signed tree head): its size, the
    Merkle root over its entry hashes, and its last entry. Whoever keeps one can later prove
    the ledger only grew since (a consistency proof), or catch it cut short or rewritten."""

    ledger_id: HashHex = Field(description="fingerprint of the ledger's first key")
    size: Offset
    root: HashHex = Field(description="RFC 9162 SHA-256 tree over the entries' hashes")
    head: HashHex | None = Field(None, description="hash of the last entry")
    key_id: HashHex = Field(description="fingerprint of the key that signed this")
    time: UtcDatetime
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] | None = Field(
        None, description="Ed25519 over the canonical bytes of every other field")


class LedgerRef(Message):
    """Where an aggregate root was anchored."""

    kind: Literal["file", "evm"]
    ledger_id: str = Field(description="file: fingerprint of the ledger's first key; "
                           "evm: the anchoring account, 'eip155:<chain id>:<address>'")
    entry: str = Field(description="file: entry index; evm: transaction hash")
    checkpoint: LedgerCheckpoint | None = Field(
        None, description="file: the signed checkpoint of the ledger right after this entry")


class WitnessedCheckpoint(Message):
    """A file ledger's checkpoint and the EVM transaction that witnessed it: the operator
    committed, in public and for good, to the ledger having that size and root at that time."""

    checkpoint: LedgerCheckpoint
    witness: LedgerRef = Field(description="the EVM anchor of the checkpoint's digest "
                               "(anchoring/witness.py)")


class AnchorRecord(Message):
    """Value of ``anchors.v1``: a batch manifest with its aggregate proof and ledger reference."""

    manifest: AnchorManifest
    aggregate: AggregateProof
    ledger: LedgerRef


class RecordRef(Message):
    topic: str
    partition: Offset
    offset: Offset
    leaf_hash: HashHex = Field(
        description="H(0x00 || offset as u64 big-endian || record value bytes); without the "
        "offset for manifests that have no `leaves`")


class Receipt(Message):
    """Everything a third party needs to verify one record offline, plus the ledger lookup."""

    record: RecordRef
    leaf_index: Offset
    inclusion_proof: tuple[HashHex, ...]
    manifest: AnchorManifest
    aggregate: AggregateProof
    ledger: LedgerRef
