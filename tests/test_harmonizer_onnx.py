"""Exported harmonizer models: card conformance, ORT parity with the stored torch output, decoding.

Every harmonizer model in `onnx_models/` (`runtime.shipped_names`: `harmonizer*` with a
tokenizer; the per-beat tagger beside them has its own tests in `test_harmonizer_tagger.py`)
is checked with a real ONNX Runtime session (`test_model_cards.py` fails when a shipped model
is missing).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.harmonizer.decode import fill_masks
from engines.harmonizer.harmonize import bar_starts_for, harmonize, next_chords
from engines.harmonizer.runtime import HarmonizerModel, ModelLoadError, shipped_names
from engines.harmonizer.vocab import BAR, MASK, NC, NUM_SPECIALS, PAD, VOCAB_SIZE, transpose_tokens

MODEL_DIR = Path(__file__).resolve().parent.parent / "onnx_models"
MODELS = [MODEL_DIR / f"{name}.onnx" for name in shipped_names(MODEL_DIR)]
REQUIRED_CARD_KEYS = {
    "sha256",
    "grid",
    "tokenizer",
    "styles",
    "inputs",
    "outputs",
    "model",
    "training",
    "data",
    "validation",
    "parity",
}


def _parity(path: Path) -> dict[str, np.ndarray]:
    card = json.loads(path.with_suffix(".card.json").read_text())
    with np.load(path.parent / card["parity"]["file"]) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_card_conformance(path: Path) -> None:
    model = HarmonizerModel.load(path)
    assert REQUIRED_CARD_KEYS <= set(model.card)
    assert model.card["tokenizer"]["vocab_size"] == VOCAB_SIZE
    assert len(model.card["tokenizer"]["tokens"]) == VOCAB_SIZE
    assert [i["name"] for i in model.card["inputs"]] == ["melody", "harmony", "va", "style", "condition"]
    assert model.card["training"]["step"] > 0
    assert set(model.card["data"]["splits"]) == {"train", "val", "test"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_ort_matches_stored_torch_output(path: Path) -> None:
    model = HarmonizerModel.load(path)
    example = _parity(path)
    logits = model.logits_batch(
        example["melody"], example["harmony"], example["va"], example["style"], example["condition"]
    )
    np.testing.assert_allclose(logits, example["expected_logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["certain", "entropic", "midpoint"])
def test_decoding_with_the_real_model(strategy: str) -> None:
    model = HarmonizerModel.load(MODELS[0])
    example = _parity(MODELS[0])
    melody, va, condition = example["melody"][0], example["va"][0], example["condition"][0]
    style = int(example["style"][0])
    given = example["harmony"][0]
    start = np.where(given == BAR, BAR, MASK)
    last_melody = int(np.flatnonzero(melody[:, :12].sum(1) > 0).max())
    result = fill_masks(
        lambda h: model.logits(melody, h, va, style, condition),
        start,
        last_melody,
        strategy,
        np.random.default_rng(0),
        calls=8,
    )
    assert not (result.harmony == MASK).any()
    assert (result.harmony[given == BAR] == BAR).all()
    assert not np.isin(result.harmony[: last_melody + 1], [PAD, NC]).any()
    if strategy == "entropic":
        assert result.calls <= 8


def test_tampered_model_and_bad_inputs_are_rejected(tmp_path: Path) -> None:
    source = MODELS[0]
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    shutil.copy(source.with_suffix(".card.json"), copy.with_suffix(".card.json"))
    HarmonizerModel.load(copy)
    with copy.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        HarmonizerModel.load(copy)
    with pytest.raises(ModelLoadError, match="not found"):
        HarmonizerModel.load(tmp_path / "missing.onnx")
    model = HarmonizerModel.load(source)
    example = _parity(source)
    with pytest.raises(ValueError, match="shape"):
        model.logits(
            example["melody"][0][:-1], example["harmony"][0], example["va"][0], 0, example["condition"][0]
        )
    with pytest.raises(ValueError, match="style"):
        model.logits(
            example["melody"][0], example["harmony"][0], example["va"][0], 99, example["condition"][0]
        )


def test_harmonize_a_long_melody_and_transposition_equivariance() -> None:
    model = HarmonizerModel.load(MODELS[0])
    if model.grid.roll != "pc":
        pytest.skip("equivariance holds exactly only for pitch-class rolls")
    tune = np.array([71, 71, 72, 74, 74, 72, 71, 69, 67, 67, 69, 71, 69, 67, 67, -1] * 8)  # ends on G
    bars = bar_starts_for(len(tune), 4)
    first = harmonize(model, tune, bars, (4, 4), rng=np.random.default_rng(3))
    moved = harmonize(model, np.where(tune >= 0, tune + 2, -1), bars, (4, 4), rng=np.random.default_rng(3))
    assert len(first.chords) == len(tune)
    assert not np.isin(first.chords, [MASK, BAR, PAD]).any()
    assert (first.tonic, first.mode) == (7, "major")
    np.testing.assert_array_equal(moved.chords, transpose_tokens(first.chords, 2))
    with pytest.raises(ValueError, match="style"):
        harmonize(model, tune, bars, style="bebop")


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_live_window_of_a_dynamic_length_graph(path: Path) -> None:
    model = HarmonizerModel.load(path)
    if not model.dynamic_length:  # a fixed-length graph: the live window is the whole window
        assert model.live_length == model.length and "max_abs_difference_live_window" not in model.card["parity"]
        return
    assert 1 <= model.live_length <= model.length
    assert model.card["parity"]["max_abs_difference_live_window"] <= model.card["parity"]["atol"]
    seen: list[int] = []
    original = model.logits

    def recording(melody, harmony, va, style, condition):
        seen.append(len(harmony))
        return original(melody, harmony, va, style, condition)

    model.logits = recording
    tune = np.array([71, 71, 72, 74, 74, 72, 71, 69, 67, 67, 69, 71, 71, 69, 69, 67] * 4)
    bars = bar_starts_for(len(tune), 4)
    chords = np.full(len(tune), NC, dtype=np.int64)
    for beat in (0, 5, len(tune) - 1):
        given = chords[: beat + 1].copy()
        given[beat] = MASK
        token = next_chords(model, tune[: beat + 1], bars[: beat + 1], given, (7, "major"),
                            np.zeros((beat + 1, 2), np.float32), model.styles[0], (4, 4),
                            np.random.default_rng(beat))[0]
        assert NUM_SPECIALS <= token < VOCAB_SIZE
    # beats 0 and 5: the whole history (1 and 6 beats + their bars); the last: at most live_length
    assert seen[0] == 2 and seen[1] == 8 and model.live_length - 5 <= seen[2] <= model.live_length
