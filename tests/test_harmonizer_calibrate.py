"""Decoding calibration on the validation split with the shipped model (real ONNX Runtime)."""

import json
import shutil
from pathlib import Path

import pytest

from engines.harmonizer.runtime import DEFAULT_TEMPERATURE, HarmonizerModel
from training.harmonizer.calibrate import calibrate, write_card

MODEL = Path(__file__).resolve().parent.parent / "onnx_models" / "harmonizer.onnx"


def test_calibration_picks_the_lowest_validation_error_and_the_card_carries_it(tmp_path: Path) -> None:
    for item in MODEL.parent.glob("harmonizer.*"):
        shutil.copy(item, tmp_path / item.name)
    model = HarmonizerModel.load(tmp_path / "harmonizer.onnx")
    result = calibrate(model, [0.2, 1.0], [0.9], calls=4, cache=tmp_path / "cache", pieces=1)
    assert result["split"] == "val" and result["windows"] >= 1
    assert [(row["temperature"], row["top_p"]) for row in result["grid"]] == [(0.2, 0.9), (1.0, 0.9)]
    truth = result["ground_truth"]
    for row in result["grid"]:
        deviations = [abs(row["means"][m] - truth[m]) for m in ("PCS", "CTnCTR")]
        assert row["objective"] == pytest.approx(max(deviations))
    best = min(result["grid"], key=lambda row: (round(row["objective"], 3), row["mae"]["PCS"]))
    assert result["chosen"] == {"temperature": best["temperature"], "top_p": 0.9}

    write_card(model, result)
    reloaded = HarmonizerModel.load(tmp_path / "harmonizer.onnx")  # the sha256 still matches
    assert reloaded.temperature == best["temperature"] and reloaded.top_p == 0.9
    assert "validation split" in reloaded.card["decoding"]["calibrated_on"]
    card = json.loads((tmp_path / "harmonizer.card.json").read_text())
    del card["decoding"]
    (tmp_path / "harmonizer.card.json").write_text(json.dumps(card))
    assert HarmonizerModel.load(tmp_path / "harmonizer.onnx").temperature == DEFAULT_TEMPERATURE
