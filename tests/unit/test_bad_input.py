"""The bad-input suite, pure half: fuzzed declarations files and receipts given to `verify`.

Each gets a clear error (an exit code of ours and a message naming the problem) and never a
traceback, and nothing valid next to them is lost. MQTT payloads are fuzzed against the real
gateway in test_gateway.py and against the pure validator in test_validation.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from anchoring import batches, merkle
from anchoring.ledgers.file import FileLedger
from deploy.cli import main
from ingest import declarations
from ingest.fleet import Fleet, FleetConfig
from schemas import Declaration, Receipt, RecordRef, encode
from smartport.errors import InputRejected
from tests.helpers import batch_manifest

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
VALID = [encode(d).decode() for d in Fleet(FleetConfig(devices=60, seed=9)).declarations]

junk_lines = st.one_of(
    # Any text without a newline, U+2028 and its kind included (JSON may hold them raw).
    st.text(max_size=80).map(lambda text: text.replace("\n", " ")),
    st.sampled_from(['{"container_no": "CSQU3054383"}', "{", "[]", "null", '{"a": 1}',
                     VALID[0].replace('"version":1', '"version":-1'),
                     VALID[1].replace("CN", "XX", 1), VALID[2][:-5]]),
    st.dictionaries(st.sampled_from(["container_no", "status", "version", "gross_weight_kg",
                                     "vessel_imo", "x"]),
                    st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=12)),
                    max_size=5).map(json.dumps),
)


def _classified(path: Path) -> tuple[list[Declaration], list[int]]:
    valid, rejected = [], []
    for line, _, outcome in declarations.parse_file(path):
        if isinstance(outcome, str):
            assert outcome, "a rejection always has a reason"
            rejected.append(line)
        else:
            valid.append(outcome)
    return valid, rejected


@FUZZ
@example(lines=[("junk", "a\u2028b\x85c"), ("valid", VALID[0])])  # line breaks to str, not JSONL
@given(lines=st.lists(st.one_of(st.sampled_from(VALID).map(lambda v: ("valid", v)),
                                junk_lines.map(lambda j: ("junk", j))), max_size=25))
def test_declaration_lines_are_each_kept_or_rejected_with_a_reason(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[str, str]]
) -> None:
    path = tmp_path_factory.mktemp("declarations") / "declarations.jsonl"
    path.write_text("\n".join(text for _, text in lines) + "\n")
    valid, rejected = _classified(path)
    junk_numbers = {n for n, (kind, _) in enumerate(lines, start=1) if kind == "junk"}
    assert set(rejected) <= junk_numbers  # a valid line is never rejected ...
    kept = {encode(d) for d in valid}
    assert {encode(Declaration.model_validate_json(text))
            for kind, text in lines if kind == "valid"} <= kept  # ... nor lost
    assert len(valid) + len(rejected) == sum(
        1 for _, text in lines if text.removesuffix("\r").strip())


@FUZZ
@given(content=st.binary(max_size=400))
def test_any_bytes_as_json_lines_are_judged_line_by_line(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = tmp_path_factory.mktemp("declarations") / "declarations.jsonl"
    path.write_bytes(content)
    _, rejected = _classified(path)  # bad bytes reject their own line, never the file
    assert len(rejected) <= content.count(b"\n") + 1


@FUZZ
@given(content=st.binary(max_size=400))
def test_any_bytes_as_csv_give_declarations_or_a_clear_rejection(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = tmp_path_factory.mktemp("declarations") / "declarations.csv"
    path.write_bytes(content)
    try:
        _classified(path)
    except InputRejected as exc:
        message = str(exc)
    else:
        return
    assert f"{path} is not UTF-8 text" in message


# -- receipts given to `verify` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], bytes]:
    """A file ledger with one anchored batch, and a true receipt of one of its records."""
    home = tmp_path_factory.mktemp("receipts")
    values = [json.dumps({"n": n}).encode() for n in range(7)]
    manifest = batch_manifest("telemetry.v1", 2, list(enumerate(values)), 1_795_824_000_000)
    aggregate = batches.aggregate([manifest], "blake3")[0]
    ref = FileLedger(home / "ledger").anchor(aggregate.root, "blake3", [(manifest, aggregate)])
    _, proofs = merkle.tree([batches.leaf(n, v) for n, v in enumerate(values)])
    receipt = Receipt(record=RecordRef(topic="telemetry.v1", partition=2, offset=3,
                                       leaf_hash=merkle.BLAKE3.hash_leaf(
                                           batches.leaf(3, values[3])).hex()),
                      leaf_index=3, inclusion_proof=tuple(p.hex() for p in proofs[3]),
                      manifest=manifest, aggregate=aggregate, ledger=ref)
    return home, json.loads(encode(receipt)), values[3]


def _mutate(value: Any, path: list[int], replacement: Any) -> Any:
    """``value`` with the node that ``path`` picks (indices into its keys or items) replaced."""
    if not path or not isinstance(value, dict | list) or not value:
        return replacement
    if isinstance(value, dict):
        key = sorted(value)[path[0] % len(value)]
        return {**value, key: _mutate(value[key], path[1:], replacement)}
    index = path[0] % len(value)
    return [*value[:index], _mutate(value[index], path[1:], replacement), *value[index + 1:]]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=70), st.sampled_from(["00" * 32, "blake3", "sha256", "file"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=6,
)


@FUZZ
@given(tamper=st.tuples(st.lists(st.integers(min_value=0, max_value=20), max_size=4),
                        json_values, st.one_of(st.none(), st.binary(max_size=20))))
def test_a_tampered_receipt_or_record_never_verifies_and_never_crashes(
    genuine: tuple[Path, dict[str, Any], bytes], tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tamper: tuple[list[int], Any, bytes | None],
) -> None:
    """``tamper``: which node of the receipt to replace, with what, and the record's bytes."""
    path, replacement, record_edit = tamper
    home, receipt, record = genuine
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{home / 'ledger'}")
    work = tmp_path_factory.mktemp("verify")
    tampered = _mutate(receipt, path, replacement)
    edited = record if record_edit is None else record_edit
    (work / "receipt.json").write_text(json.dumps(tampered))
    (work / "record.bin").write_bytes(edited)
    code = main(["verify", str(work / "receipt.json"), "--record", str(work / "record.bin"),
                 "--trust-ledger", receipt["ledger"]["ledger_id"]])
    output = capsys.readouterr()
    # The ledger's checkpoint is evidence for whoever lacks the ledger; this verifier checks
    # the ledger itself, so a receipt that only drops it is still true.
    equivalents = (receipt, {**receipt, "ledger": {**receipt["ledger"], "checkpoint": None}})
    if any(json.dumps(tampered, sort_keys=True) == json.dumps(same, sort_keys=True)
           for same in equivalents) and edited == record:  # (as JSON text: True == 1 in Python)
        assert code == 0
    else:
        assert code in (1, 4), output.err
        assert "error:" in output.err


@FUZZ
@given(content=st.binary(max_size=300))
def test_any_bytes_as_a_receipt_are_rejected_clearly(
    genuine: tuple[Path, dict[str, Any], bytes], tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], content: bytes,
) -> None:
    home, _, record = genuine
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{home / 'ledger'}")
    work = tmp_path_factory.mktemp("verify")
    (work / "receipt.json").write_bytes(content)
    (work / "record.bin").write_bytes(record)
    assert main(["verify", str(work / "receipt.json"), "--record", str(work / "record.bin"),
                 "--trust-ledger", "0" * 64]) == 4
    assert "is not a smartport receipt" in capsys.readouterr().err


def test_the_genuine_receipt_verifies(
    genuine: tuple[Path, dict[str, Any], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fuzz tests' starting point is itself valid (else they would prove nothing)."""
    home, receipt, record = genuine
    monkeypatch.setenv("SMARTPORT_LEDGER_URL", f"file://{home / 'ledger'}")
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    (tmp_path / "record.bin").write_bytes(record)
    verify_cli = ["verify", str(tmp_path / "receipt.json"), "--record",
                  str(tmp_path / "record.bin")]
    assert main([*verify_cli, "--trust-ledger", receipt["ledger"]["ledger_id"]]) == 0
    assert main([*verify_cli, "--trust-ledger", "0" * 64]) == 1
