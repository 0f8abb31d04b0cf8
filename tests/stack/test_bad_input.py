"""The bad-input suite against the stack: a mixed declarations file loaded, CLI arguments.

Each gets a clear error (an exit code of ours and a message naming the problem) and never a
traceback, and nothing valid next to them is lost. MQTT payloads are fuzzed against the real
gateway in test_gateway.py and against the pure validator in test_validation.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.cli import main
from ingest.fleet import Fleet, FleetConfig
from schemas import Declaration, encode, topics
from smartport.kafka import high_watermarks, read_range
from smartport.settings import Settings

EXIT_CODES = {0, 1, 2, 3, 4}  # ok, failed check, usage/config, stack, rejected input
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_loading_a_mixed_file_keeps_every_valid_declaration(
    stack: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = Fleet(FleetConfig(devices=30, seed=11))
    good = [encode(d).decode() for d in fleet.declarations]
    junk = ["{", '{"container_no": "NOPE"}', "\x00\x01", "[1, 2]"]  # lines 2, 4, 6 and 8
    mixed = [line for pair in zip(good, junk, strict=False) for line in pair] + good[len(junk):]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(mixed) + "\n")
    since = high_watermarks(stack.kafka, topics.DECLARATIONS)
    assert main(["declarations", "load", str(path)]) == 4
    error = capsys.readouterr().err
    assert f"{len(junk)} of {len(mixed)} declarations" in error
    for number in (2, 4, 6, 8):
        assert f"line {number}:" in error
    kept = path.with_name("mixed.jsonl.rejected.jsonl")
    assert [json.loads(line)["line"] for line in kept.read_text().splitlines()] == [2, 4, 6, 8]
    loaded = {Declaration.model_validate_json(m.value() or b"").container_no
              for m in read_range(stack.kafka, topics.DECLARATIONS, since)}
    assert {d.container_no for d in fleet.declarations} <= loaded


# -- CLI arguments ------------------------------------------------------------------------------

OPTION_WORDS = ["--devices", "--rate", "--duration", "--count", "--seed", "--anomaly-rate",
                "--invalid-rate", "--truth", "--report", "--config", "--record", "--", "-x",
                "--partition", "--offset", "--topic", "--format"]
argument_words = st.one_of(
    st.sampled_from(OPTION_WORDS),
    st.sampled_from(["0", "-1", "3", "1e9", "nan", "inf", "0.5", "2", "", "x", ".", "/",
                     "none.toml", "a b", "--count"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
            max_size=12),
)
COMMANDS = [["simulate"], ["verify"], ["receipt"], ["declarations", "load"],
            ["schemas", "export"], ["ledger", "verify"], ["sql"]]


@FUZZ
@given(command=st.sampled_from(COMMANDS), words=st.lists(argument_words, max_size=6))
def test_arbitrary_arguments_get_an_exit_code_and_a_message(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], command: list[str], words: list[str],
) -> None:
    work = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(work)  # relative paths among the words land here
    monkeypatch.setenv("SMARTPORT_STATE_DIR", str(work / "state"))
    monkeypatch.setenv("SMARTPORT_QUERY_PORT", "1")  # `sql` must not reach a running sink
    # Bounds after the fuzzed words (the last value of an option wins): a simulation writes
    # at most 20 messages to a file and never touches MQTT.
    bounded = (["--count", "20", "--rate", "0", "--emit-jsonl", str(work / "m.jsonl")]
               if command == ["simulate"] else [])
    code = main([*command, *words, *bounded])
    output = capsys.readouterr()
    assert code in EXIT_CODES
    if code:
        assert "error" in output.err.lower() or "usage" in output.err.lower(), output.err
    assert "Traceback" not in output.err + output.out
