"""Training and export of a tiny continuation model through the shared export tail: the card,
the parity example and the files appear together and load through the runtime's loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.continuation import tokens as tk  # noqa: E402
from engines.continuation.corpus import CACHE_FILE, load_split_ids  # noqa: E402
from engines.continuation.runtime import ContinuationModel  # noqa: E402
from onnx_models import check_parity  # noqa: E402
from training.continuation import train  # noqa: E402
from training.continuation.export import export_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow


def _tiny_cache(folder: Path) -> Path:
    pieces, ids = [], []
    for number, split in enumerate(("train", "val", "test")):
        notes = [tk.NoteEvent(i * 6, tk.RIGHT if i % 3 else tk.LEFT, 48 + (i * 5 + number) % 30, 6, 64)
                 for i in range(60)]
        pieces.append(np.array(tk.encode(notes, add_sos=True, add_eos=True), dtype=np.int16))
        ids.append(load_split_ids(split)[0])
    folder.mkdir()
    np.savez_compressed(
        folder / CACHE_FILE, tokens=np.concatenate(pieces),
        va=np.zeros((sum(map(len, pieces)), 2), np.float16),
        offsets=np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64),
        piece_ids=np.array(ids), styles=np.zeros(3, np.int64),
    )
    return folder


def test_tiny_model_trains_and_exports_through_the_shared_tail(tmp_path: Path) -> None:
    cache = _tiny_cache(tmp_path / "cache")
    run = tmp_path / "run"
    assert train.main(["--steps", "2", "--batch", "2", "--length", "32", "--eval-every", "2",
                       "--d-model", "16", "--layers", "1", "--cache", str(cache), "--out", str(run)]) == 0
    out = tmp_path / "models"
    card = export_checkpoint(run / "best.pt", "tiny", out, cache)
    assert sorted(p.name for p in out.iterdir()) == ["tiny.card.json", "tiny.onnx", "tiny.parity.npz"]
    assert json.loads((out / "tiny.card.json").read_text()) == card
    assert card["onnx_file"] == "tiny.onnx" and card["training"]["step"] == 2
    parity = card["parity"]
    assert max(v for k, v in parity.items() if k.startswith("max_abs")) <= parity["atol"]
    assert check_parity(out / "tiny.card.json") <= parity["atol"]
    model = ContinuationModel.load(out / "tiny.onnx")
    assert model.layers == 1 and model.logits(np.array([tk.SOS, tk.BAR]), np.zeros((2, 2)), 0).shape == (
        2, tk.VOCAB_SIZE)
