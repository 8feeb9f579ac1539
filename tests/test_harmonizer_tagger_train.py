"""The tagger's trainer side: a tagger exported through the shared self-test export loads with
the runtime's loader, matches torch, and its card carries the data and training sections."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `train` extra, as every training test

from engines.harmonizer.tagger import CLASSES, ChordTagger  # noqa: E402
from onnx_models import check_parity, read_card  # noqa: E402
from training.harmonizer import tagger as trainer  # noqa: E402


def test_an_exported_tagger_reloads_and_matches_torch(tmp_path, monkeypatch):
    features = 173
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(80, features, generator=generator)
    monkeypatch.setattr(trainer, "split_arrays", lambda split: (example, torch.zeros(80, dtype=torch.long), 3))
    torch.manual_seed(0)
    model = trainer.Tagger(features, 16, 0.0)
    args = argparse.Namespace(epochs=1, hidden=16, dropout=0.0, lr=1e-3, weight_decay=0.0, batch=8, seed=0,
                              out=tmp_path, export=True, export_dir=tmp_path, checkpoint=None)
    summary = {"features": features, "train_beats": 80, "val_beats": 80, "log": []}
    card = trainer.export(model, summary, args, tmp_path)
    path = tmp_path / f"{trainer.NAME}.onnx"
    assert path.is_file() and not list(tmp_path.glob(".*staging"))
    assert check_parity(tmp_path / f"{trainer.NAME}.card.json") <= 1e-4
    stored = read_card(tmp_path / f"{trainer.NAME}.card.json")
    assert stored["sha256"] == card["sha256"] and {"data", "training", "features", "classes"} <= set(stored)
    assert stored["training"]["step"] == 10  # one epoch of 80 beats in batches of 8
    log_probs = ChordTagger.load(path).log_probs(example[:5].numpy())
    assert log_probs.shape == (5, CLASSES)
    assert np.allclose(np.exp(log_probs).sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        assert np.abs(log_probs - model(example[:5]).numpy()).max() < 1e-4
