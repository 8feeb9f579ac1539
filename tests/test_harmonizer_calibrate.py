"""Choosing the default decoding on validation lead sheets (real ONNX Runtime, synthetic songs)."""

import json
import shutil
from pathlib import Path

from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer.runtime import DEFAULT_TEMPERATURE, HarmonizerModel
from tests.test_eval_leadsheets import C_MAJOR, _arrays, _sheet
from training.harmonizer.calibrate import calibrate, choose, write_card

MODEL = Path(__file__).resolve().parent.parent / "onnx_models" / "harmonizer.onnx"


def _row(majmin: float, ratio: float, tones: float = 0.8) -> dict:
    return {"majmin": majmin, "changes_ratio": ratio, "chord_tones": tones}


def test_the_choice_keeps_the_human_harmonic_rhythm_first() -> None:
    rows = [_row(0.70, 2.0), _row(0.55, 1.1), _row(0.50, 0.9)]
    assert choose(rows) is rows[1]  # the best agreement changes chord twice as often: out
    assert choose([_row(0.4, 3.0), _row(0.3, 0.2)])["majmin"] == 0.4  # none inside: best of all
    half = _row(0.383, 0.8) | {"rhythm": "half-bar", "temperature": 0.3}
    auto_warm = _row(0.381, 0.9) | {"rhythm": "auto", "temperature": 0.3}
    auto_greedy = _row(0.380, 0.9) | {"rhythm": "auto", "temperature": 0.0}
    assert choose([half, auto_warm, auto_greedy]) is auto_greedy  # within 0.005: auto, then greedy
    assert choose([half | {"majmin": 0.40}, auto_greedy]) is not auto_greedy  # a real gain wins


def test_calibration_scores_every_setting_and_the_card_carries_the_choice(tmp_path: Path) -> None:
    for item in MODEL.parent.glob("harmonizer.*"):
        shutil.copy(item, tmp_path / item.name)
    model = HarmonizerModel.load(tmp_path / "harmonizer.onnx")
    songs = le.songs_from_arrays(_arrays([
        _sheet("openewld/a", "folk", (4, 4), 4, C_MAJOR, [(0, "C:maj"), (16, "F:maj"), (32, "G:maj"), (48, "C:maj")]),
        _sheet("pop909/b", "pop", (3, 4), 4, C_MAJOR[:12], [(0, "C:maj"), (24, "G:maj"), (36, "C:maj")]),
    ]))
    result = calibrate(str(model.path), ["midpoint"], [0.0, 1.0], ["auto", "bar"], jobs=1, songs=songs,
                       calls=[1, 10])
    assert result["split"] == "val" and result["songs"] == 2
    assert [(r["strategy"], r["calls"], r["temperature"], r["rhythm"]) for r in result["grid"]] == [
        (strategy, calls, t, rhythm) for strategy, calls in (("entropic", 1), ("midpoint", 10))
        for t in (0.0, 1.0) for rhythm in ("auto", "bar")]
    for row in result["grid"]:
        assert 0.0 <= row["majmin"] <= 1.0 and row["changes_ratio"] >= 0.0
    best = choose(result["grid"])
    assert result["chosen"] == {k: best[k] for k in ("strategy", "calls", "temperature", "top_p", "rhythm")}

    write_card(model, result)
    reloaded = HarmonizerModel.load(tmp_path / "harmonizer.onnx")  # the sha256 still matches
    assert (reloaded.temperature, reloaded.rhythm, reloaded.strategy, reloaded.calls) == (
        best["temperature"], best["rhythm"], best["strategy"], best["calls"])
    assert "validation lead sheets" in reloaded.card["decoding"]["calibrated_on"]
    card = json.loads((tmp_path / "harmonizer.card.json").read_text())
    del card["decoding"]
    (tmp_path / "harmonizer.card.json").write_text(json.dumps(card))
    assert HarmonizerModel.load(tmp_path / "harmonizer.onnx").temperature == DEFAULT_TEMPERATURE


def test_held_out_figures_go_into_the_card(tmp_path: Path) -> None:
    import pytest

    from training.harmonizer.card import add_evaluation

    for item in MODEL.parent.glob("harmonizer.*"):
        shutil.copy(item, tmp_path / item.name)
    model = HarmonizerModel.load(tmp_path / "harmonizer.onnx")
    songs = le.songs_from_arrays(_arrays([
        _sheet("openewld/a", "folk", (4, 4), 4, C_MAJOR, [(0, "C:maj"), (16, "F:maj"), (32, "G:maj"), (48, "C:maj")]),
    ]))
    produced = le.baselines(songs, with_rule=False)
    report = {"split": "test"} | le.evaluate_songs(songs, produced)
    add_evaluation(model, report, "scorebridge eval harmony")
    card = HarmonizerModel.load(tmp_path / "harmonizer.onnx").card  # the sha256 still matches
    evaluation = card["evaluation"]
    assert evaluation["systems"]["human"]["all"]["majmin"] == 1.0
    assert evaluation["systems"]["best-triad"]["folk"]["majmin"] == report["systems"]["best-triad"]["groups"][
        "folk"]["majmin"]
    assert "test lists" in evaluation["set"] and evaluation["command"] == "scorebridge eval harmony"
    with pytest.raises(ValueError, match="split"):
        add_evaluation(model, {"systems": {}}, "x")
