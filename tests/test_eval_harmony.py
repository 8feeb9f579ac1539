"""`scorebridge eval harmony` on a tiny set: held-out chorales and folk melodies parsed from
music21's corpus, the rule engine and the shipped model through real ONNX Runtime sessions."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from engines.harmonizer import harmony_eval
from engines.harmonizer.vocab import BAR, MASK, PAD, token_pitch_classes

pytestmark = pytest.mark.slow


def test_eval_harmony_tiny_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, table = tmp_path / "harmony.json", tmp_path / "harmony.md"
    code = main([
        "eval", "harmony", "--set", "chorales", "--models", "harmonizer", "--strategies", "entropic", "start",
        "--pieces", "1", "--windows", "1", "--folk", "2", "--cache", str(tmp_path),
        "--out", str(out), "--markdown", str(table), "--quiet",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    chorales, folk = report["sets"]
    names = [r["system"] for r in chorales["results"]]
    assert names == ["ground truth", "rule", "harmonizer/entropic", "harmonizer/start"]
    assert chorales["windows"] == 1 and chorales["with_truth"] and not folk["with_truth"]
    truth, rule, entropic, start = chorales["results"]
    assert truth["mae"] == {} and set(rule["mae"]) == {"CHE", "CC", "CTD", "CTnCTR", "PCS", "MCTD"}
    assert entropic["mean_calls"] <= 10 and start["mean_calls"] > 10  # one token per call
    for result in chorales["results"] + folk["results"]:
        means = result["means"]
        assert 0.0 <= means["CTnCTR"] <= 1.0 and -1.0 <= means["PCS"] <= 1.0
        assert means["CC"] >= 1 and math.isfinite(means["CHE"])
    assert [r["system"] for r in folk["results"]] == ["rule", "harmonizer/entropic", "harmonizer/start"]
    assert "MAE" not in folk and all(r["mae"] == {} for r in folk["results"])
    printed = capsys.readouterr().out
    assert "| harmonizer/entropic |" in printed and table.read_text().strip() == printed.strip()
    assert (tmp_path / "folk_q16_2.npz").exists()  # folk melodies cached beside the data


def test_eval_harmony_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "harmony", "--models", "no_such_model"]) == 1
    assert "no_such_model" in capsys.readouterr().err
    assert main(["eval", "harmony", "--windows", "0"]) == 1
    assert "--windows must be at least 1" in capsys.readouterr().err


def test_rule_row_follows_the_melody() -> None:
    roll = np.zeros((6, 13), np.uint8)
    roll[0, 12] = 1  # a bar position
    for position, pcs in ((1, (0, 4)), (2, (7,)), (3, (5, 9)), (4, (7, 11))):
        roll[position, list(pcs)] = 1
    row = np.array([BAR, MASK, MASK, MASK, MASK, PAD])
    tokens = harmony_eval.rule_row(roll, row)
    assert tokens[0] == BAR and tokens[5] == PAD
    for position, pcs in ((1, (0, 4)), (3, (5, 9)), (4, (7, 11))):
        assert set(pcs) <= set(token_pitch_classes(int(tokens[position])))
