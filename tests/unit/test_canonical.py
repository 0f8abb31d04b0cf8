import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import encode, parse_telemetry
from tests.helpers import crane_reading

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_known_bytes() -> None:
    assert encode({"b": 1, "a": [True, None, "é"], "c": {"z": 0.5, "y": "x"}}) == (
        '{"a":[true,null,"é"],"b":1,"c":{"y":"x","z":0.5}}'.encode()
    )


def test_key_order_of_the_input_does_not_matter() -> None:
    forward = crane_reading()
    backward = dict(reversed(list(forward.items())))
    assert encode(parse_telemetry(json.dumps(forward))) == encode(
        parse_telemetry(json.dumps(backward))
    )


def test_whitespace_and_zone_of_the_input_do_not_matter() -> None:
    compact = json.dumps(crane_reading(ts="2026-11-24T02:00:00Z"), separators=(",", ":"))
    spaced = json.dumps(crane_reading(ts="2026-11-24T10:00:00+08:00"), indent=4)
    assert encode(parse_telemetry(compact)) == encode(parse_telemetry(spaced))


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        encode({"x": math.nan})


@given(json_values)
def test_encoding_is_json_dumps_with_sorted_keys_and_no_blanks(value: object) -> None:
    """The definition the encoder is made once from (json.dumps builds it per call)."""
    assert encode(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False, allow_nan=False).encode()


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, {"a": 1, 2: "mixed keys"}])
def test_what_is_not_json_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        encode(value)


def test_a_cycle_is_refused_even_under_a_raised_recursion_limit() -> None:
    """web3 raises the limit to 100,000 on import (the anchorer's EVM ledger): recursing
    through a cycle until then overflows the C stack, and the process dies without a word."""
    code = ("import sys; sys.setrecursionlimit(100_000)\n"
            "from schemas import encode\n"
            "cyclic = {}; cyclic['self'] = cyclic\n"
            "try:\n    encode(cyclic)\nexcept ValueError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "Circular reference detected")


@given(json_values)
def test_encoding_is_a_fixed_point(value: object) -> None:
    once = encode(value)
    assert encode(json.loads(once)) == once
