"""Lockstep training of the three curricula and the export self-test, on two real chorales
(a tiny model, a few steps): checkpoints, logs, resume, card and ORT parity."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
corpus = pytest.importorskip("music21.corpus")

from engines.harmonizer import dataset, lockstep  # noqa: E402
from engines.harmonizer.extract import extract_piece  # noqa: E402

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

    from engines.harmonizer.export import export_checkpoint
    from engines.harmonizer.runtime import HarmonizerModel

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
