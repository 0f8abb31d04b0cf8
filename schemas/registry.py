"""Every wire message by name, and their JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from schemas.alert import Alert, AlertCommand
from schemas.anchoring import AnchorRecord, Receipt
from schemas.declaration import Declaration
from schemas.envelope import DlqRecord, GatewayEnvelope
from schemas.telemetry import TELEMETRY_ADAPTER
from schemas.transit import Clearance, DischargeCertificate, PortEvent, TransitEvent

# Public message names, as used in the AsyncAPI document and the exported file names.
MESSAGES: dict[str, TypeAdapter[Any]] = {
    "Telemetry": TELEMETRY_ADAPTER,
    "GatewayEnvelope": TypeAdapter(GatewayEnvelope),
    "Declaration": TypeAdapter(Declaration),
    "Alert": TypeAdapter(Alert),
    "AlertCommand": TypeAdapter(AlertCommand),
    "DlqRecord": TypeAdapter(DlqRecord),
    "AnchorRecord": TypeAdapter(AnchorRecord),
    "Receipt": TypeAdapter(Receipt),
    "TransitEvent": TypeAdapter(TransitEvent),
    "DischargeCertificate": TypeAdapter(DischargeCertificate),
    "Clearance": TypeAdapter(Clearance),
    "PortEvent": TypeAdapter(PortEvent),
}


def json_schema(name: str) -> dict[str, Any]:
    """The standalone JSON Schema (2020-12) of one message."""
    schema = MESSAGES[name].json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", name)
    return schema


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<Name>.schema.json`` for every message into ``directory``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MESSAGES:
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def component_schemas(ref_prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(message name -> schema ref, shared definitions) for embedding in one document."""
    mode: Literal["validation"] = "validation"
    inputs = [(name, mode, adapter) for name, adapter in MESSAGES.items()]
    refs, definitions = TypeAdapter.json_schemas(inputs, ref_template=ref_prefix + "{model}")
    by_name = {key[0]: schema for key, schema in refs.items()}
    return by_name, definitions.get("$defs", {})
