"""Message models, identifiers, the canonical encoding and the topic names of smartport."""

from schemas.alert import Alert, AlertCommand, AlertState, Evidence, Rule, Severity
from schemas.anchoring import (
    AggregateProof,
    AnchorManifest,
    AnchorRecord,
    LedgerCheckpoint,
    LedgerRef,
    Receipt,
    RecordRef,
    WitnessedCheckpoint,
)
from schemas.base import SCHEMA_VERSION, Message
from schemas.canonical import encode
from schemas.declaration import Declaration, DeclarationStatus, parse_declaration
from schemas.envelope import DlqRecord, GatewayEnvelope, RejectReason
from schemas.telemetry import (
    ContainerReading,
    CraneReading,
    RtgReading,
    Telemetry,
    parse_telemetry,
)

__all__ = [
    "SCHEMA_VERSION",
    "AggregateProof",
    "Alert",
    "AlertCommand",
    "AlertState",
    "AnchorManifest",
    "AnchorRecord",
    "ContainerReading",
    "CraneReading",
    "Declaration",
    "DeclarationStatus",
    "DlqRecord",
    "Evidence",
    "GatewayEnvelope",
    "LedgerCheckpoint",
    "LedgerRef",
    "Message",
    "Receipt",
    "RecordRef",
    "RejectReason",
    "RtgReading",
    "Rule",
    "Severity",
    "Telemetry",
    "WitnessedCheckpoint",
    "encode",
    "parse_declaration",
    "parse_telemetry",
]
