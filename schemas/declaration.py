"""Customs declarations, one version per change, keyed by container number."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from schemas.base import Message
from schemas.identifiers import (
    ContainerNumber,
    ImoNumber,
    SealNumber,
    UnLocode,
    UtcDatetime,
    YardBlock,
)
from schemas.telemetry import TemperatureC
from schemas.transit import Movement


class DeclarationStatus(StrEnum):
    LODGED = "lodged"
    UNDER_REVIEW = "under_review"
    HELD = "held"
    RELEASED = "released"
    CLEARED = "cleared"


# Statuses under which customs allows the box to be opened and moved freely.
RELEASED_STATUSES = frozenset({DeclarationStatus.RELEASED, DeclarationStatus.CLEARED})

HsCode = Annotated[str, Field(pattern=r"^[0-9]{6,10}$", description="Harmonized System code")]


class ReeferRange(Message):
    """The temperature range the cargo must be kept in, in degrees Celsius."""

    min_c: TemperatureC
    max_c: TemperatureC

    @model_validator(mode="after")
    def _ordered(self) -> ReeferRange:
        if self.min_c > self.max_c:
            raise ValueError(f"reefer range min_c {self.min_c} is above max_c {self.max_c}")
        return self


class DangerousGoods(Message):
    imdg_class: Annotated[str, Field(pattern=r"^[1-9](\.[1-6])?$", description="e.g. '3', '2.1'")]
    un_number: Annotated[str, Field(pattern=r"^UN[0-9]{4}$", description="e.g. 'UN1203'")]


class Declaration(Message):
    """A customs declaration for one container."""

    declaration_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$")]
    container_no: ContainerNumber
    status: DeclarationStatus
    gross_mass_kg: Annotated[float, Field(gt=0, le=100_000)]
    seal_numbers: tuple[SealNumber, ...] = ()
    hs_codes: Annotated[tuple[HsCode, ...], Field(min_length=1)]
    reefer: ReeferRange | None = None
    dangerous_goods: DangerousGoods | None = None
    vessel_imo: ImoNumber
    voyage: Annotated[str, Field(min_length=1, max_length=32)]
    port_of_loading: UnLocode
    port_of_discharge: UnLocode
    allowed_yard_blocks: tuple[YardBlock, ...] | None = None
    movement: Movement | None = Field(None, description=(
        "a supervised transit to the other port of a combined port (linked ports)"))
    version: Annotated[int, Field(ge=1)]
    updated_at: UtcDatetime


def parse_declaration(raw: bytes | str) -> Declaration:
    """Validate one JSON declaration. Raises pydantic.ValidationError with per-field reasons."""
    return Declaration.model_validate_json(raw)
