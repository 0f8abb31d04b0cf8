"""Anchor manifests and receipts (the anchoring issue refines these)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Message
from schemas.identifiers import UtcDatetime

HashHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
HashAlgorithm = Literal["blake3", "sha256"]


class AnchorManifest(Message):
    """One Merkle batch of a (topic, partition) offset range (value of ``anchors.v1``)."""

    batch_id: Annotated[str, Field(min_length=1, max_length=256)]
    topic: str
    partition: Annotated[int, Field(ge=0)]
    first_offset: Annotated[int, Field(ge=0)]
    last_offset: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    root: HashHex
    hash_alg: HashAlgorithm
    prev_manifest_hash: HashHex | None = None
    created_at: UtcDatetime
    ledger_ref: str | None = None


class RecordRef(Message):
    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    value_b64: str


class Receipt(Message):
    """Everything a third party needs to verify one record offline, plus the ledger reference."""

    record: RecordRef
    manifest: AnchorManifest
    leaf_index: Annotated[int, Field(ge=0)]
    inclusion_proof: tuple[HashHex, ...]
    ledger_url: str
    ledger_ref: str
