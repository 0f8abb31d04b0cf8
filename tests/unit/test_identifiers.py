import gc
import json
import tracemalloc
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from schemas import iso6346
from schemas.identifiers import imo_problem
from schemas.telemetry import parse_telemetry
from tests.helpers import crane_reading, load_vectors


@pytest.mark.parametrize(("name", "case"), load_vectors("identifiers.json", "container_numbers"))
def test_container_number_vectors(name: str, case: dict[str, object]) -> None:
    assert iso6346.is_valid(str(case["number"])) is case["valid"], name


def test_check_digit_of_public_examples() -> None:
    assert iso6346.check_digit("CSQU305438") == 3
    assert iso6346.check_digit("BICU123456") == 5


def test_remainder_ten_is_written_as_zero() -> None:
    # C=13 S=30 Q=28 U=32 ... 7: 13 + 60 + 112 + 256 + 7*512 = 4025 = 365*11 + 10.
    assert iso6346.check_digit("CSQU000007") == 0
    assert iso6346.is_valid("CSQU0000070")


def test_check_digit_rejects_malformed_input() -> None:
    with pytest.raises(ValueError, match="want 3 letters, U/J/Z, 6 digits"):
        iso6346.check_digit("CSQU30543")


def test_problem_names_both_digits() -> None:
    assert iso6346.problem("CSQU3054384") == (
        "container number 'CSQU3054384' has check digit 4, want 3"
    )


@pytest.mark.parametrize(("name", "case"), load_vectors("identifiers.json", "imo_numbers"))
def test_imo_number_vectors(name: str, case: dict[str, object]) -> None:
    assert (imo_problem(str(case["number"])) is None) is case["valid"], name


def test_imo_problem_names_both_digits() -> None:
    assert imo_problem("9074728") == "IMO number '9074728' has check digit 8, want 9"


@pytest.mark.parametrize(("field", "make"), [
    ("container_no", lambda i: f"CSQU{i:07d}" + "9" * 30_000),
    ("vessel_imo", lambda i: f"{i:07d}" + "1" * 30_000),
])
def test_rejected_identifiers_are_not_kept(field: str, make: Callable[[int], str]) -> None:
    """Checks are remembered for the identifiers a port sees again and again; a device
    sending distinct 30 KB non-identifiers must not make the process keep them all."""
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(300):
            with pytest.raises(ValidationError):
                parse_telemetry(json.dumps(crane_reading(**{field: make(i)})))
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept:,} bytes kept after 300 rejected {field}s of 30 KB"


def test_a_trailing_newline_is_not_part_of_a_valid_identifier() -> None:
    assert iso6346.problem("CSQU3054383") is None
    assert iso6346.problem("CSQU3054383\n") is not None
    assert imo_problem("9074729") is None
    assert imo_problem("9074729\n") is not None
