"""Lockstep training of the three curricula and the export self-test, on two real chorales
(a tiny model, a few steps): checkpoints, logs, resume, card and ORT parity."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
corpus = pytest.importorskip("music21.corpus")

from engines.harmonizer import dataset  # noqa: E402
from engines.harmonizer.extract import extract_piece  # noqa: E402
from training.harmonizer import lockstep  # noqa: E402

pytestmark = pytest.mark.slow
TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--feedforward", "32", "--batch", "2"]


def _tiny_cache(folder: Path) -> Path:
    pieces = []
    for split in ("train", "val"):
        piece_id = dataset.load_split_ids(split)[0]
        pieces.append(extract_piece(corpus.parse(piece_id), piece_id, 0))
    arrays = dataset.pieces_to_arrays(pieces)
    arrays["split"] = np.array(["train", "val"])
    folder.mkdir()
    np.savez_compressed(folder / dataset.RAW_FILE, **arrays)
    return folder


def test_lockstep_trains_resumes_and_exports(tmp_path: Path) -> None:
    cache = _tiny_cache(tmp_path / "cache")
    root = tmp_path / "runs"
    common = ["--root", str(root), "--cache", str(cache), "--eval-every", "2", *TINY]
    assert lockstep.main(["--steps", "4", *common]) == 0
    for curriculum in ("ff", "random10", "midpoint"):
        events = [json.loads(line) for line in (root / curriculum / "log.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events if e["event"] != "train"] == ["start", "val", "val", "done"]
        assert events[-1]["step"] == 4
        assert (root / curriculum / "last.pt").exists() and (root / curriculum / "best.pt").exists()
    # a finished run resumes at its end and does nothing more; another horizon is refused
    assert lockstep.main(["--steps", "4", *common]) == 0
    with pytest.raises(ValueError, match="4 steps"):
        lockstep.main(["--steps", "6", *common])

    from engines.harmonizer.runtime import HarmonizerModel
    from training.harmonizer.export import export_checkpoint

    out = tmp_path / "models"
    card = export_checkpoint(root / "ff" / "last.pt", "tiny", out, cache)
    assert card["training"] | {} and card["training"]["curriculum"] == "ff" and card["training"]["finished"]
    assert card["parity"]["max_abs_difference_ort_vs_torch"] < 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["tiny.card.json", "tiny.onnx", "tiny.parity.npz"]
    model = HarmonizerModel.load(out / "tiny.onnx")
    assert model.card["model"]["d_model"] == 16 and "read_beat_chords" in model.card["labels"]


def test_stop_at_in_the_past_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already passed"):
        lockstep.main(["--steps", "4", "--root", str(tmp_path), "--stop-at", "00:00"])


def test_variable_lengths_affect_consistency_and_a_dynamic_length_export(tmp_path: Path) -> None:
    cache = _tiny_cache(tmp_path / "cache")
    root = tmp_path / "runs"
    assert lockstep.main(["--steps", "6", "--curricula", "ff", "--root", str(root), "--cache", str(cache),
                          "--crop-probability", "1", "--min-length", "8", "--va-consistency", "2",
                          "--eval-every", "3", *TINY]) == 0
    trained = [json.loads(line) for line in (root / "ff" / "log.jsonl").read_text().splitlines()]
    assert trained[-1] == trained[-1] | {"event": "done", "step": 6}
    assert trained[0]["config"]["va_consistency"] == "2.0"

    from engines.harmonizer.runtime import HarmonizerModel
    from training.harmonizer.export import export_checkpoint

    out = tmp_path / "models"
    card = export_checkpoint(root / "ff" / "last.pt", "tiny", out, cache, live_length=12)
    assert card["dynamic_length"] and card["live_length"] == 12
    assert card["parity"]["max_abs_difference_live_window"] < 1e-4
    model = HarmonizerModel.load(out / "tiny.onnx")
    assert (model.length, model.live_length) == (80, 12)
    with np.load(out / "tiny.parity.npz") as data:
        example = {key: data[key] for key in data.files}
    full = model.logits_batch(*(example[k] for k in ("melody", "harmony", "va", "style", "condition")))
    short = model.logits(example["melody"][0, :12], example["harmony"][0, :12], example["va"][0, :12],
                         int(example["style"][0]), example["condition"][0])
    assert full.shape == (1, 80, 403) and short.shape == (12, 403)
    with pytest.raises(ValueError, match="shape"):  # inputs of different lengths
        model.logits(example["melody"][0, :11], example["harmony"][0, :12], example["va"][0, :12], 0,
                     example["condition"][0])
    with pytest.raises(ValueError, match="live-length"):
        export_checkpoint(root / "ff" / "last.pt", "tiny", out, cache, live_length=81)
