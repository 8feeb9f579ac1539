"""The run-time-task experiment: weights read back from an exported model, the melody-only encoder
and the chord-class probabilities (training/harmonizer/experiments/allmasked.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.harmonizer.leadsheet_metrics import labels  # noqa: E402
from engines.harmonizer.vocab import BAR, MASK, VOCAB_SIZE  # noqa: E402
from onnx_models import models_dir  # noqa: E402
from training.harmonizer.experiments.allmasked import _membership, class_log_probs, from_onnx  # noqa: E402
from training.harmonizer.model import Harmonizer, ModelConfig  # noqa: E402

INPUTS = ("melody", "harmony", "va", "style", "condition")


def test_shipped_weights_read_back_reproduce_its_parity_logits() -> None:
    path = models_dir() / "harmonizer.onnx"
    model, config = from_onnx(str(path))
    parity = np.load(path.with_suffix(".parity.npz"))
    with torch.no_grad():
        logits = model(*(torch.from_numpy(parity[name]) for name in INPUTS)).numpy()
    assert config.d_model == 96 and config.encoder == "joint"
    assert np.abs(logits - parity["expected_logits"]).max() < 1e-4


def test_melody_encoder_reads_neither_chords_nor_affect() -> None:
    torch.manual_seed(0)
    model = Harmonizer(ModelConfig(d_model=32, heads=2, layers=2, feedforward=64, num_styles=8,
                                   encoder="melody")).eval()
    melody = torch.rand(2, 12, 13).round()
    masked = torch.full((2, 12), MASK, dtype=torch.int64)
    masked[:, 0] = BAR
    chords = masked.clone()
    chords[:, 1:] = 7  # C:maj given
    style, condition = torch.tensor([3, 5]), torch.zeros(2, 16)
    with torch.no_grad():
        plain = model(melody, masked, torch.zeros(2, 12, 2), style, condition)
        given = model(melody, chords, torch.rand(2, 12, 2), style, condition)
        other_melody = model(1 - melody, masked, torch.zeros(2, 12, 2), style, condition)
    assert plain.shape == (2, 12, VOCAB_SIZE)
    assert torch.allclose(plain, given)
    assert not torch.allclose(plain, other_melody)


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="encoder"):
        Harmonizer(ModelConfig(d_model=32, heads=2, encoder="decoder"))


def test_class_probabilities_sum_their_tokens() -> None:
    logits = torch.randn(1, 3, VOCAB_SIZE)
    classes = class_log_probs(logits, _membership()).exp()[0]
    probabilities = logits.softmax(-1)[0].numpy()
    klass = labels(np.arange(VOCAB_SIZE), "majmin")
    target = int(klass[7])  # C:maj's root + third class
    assert np.allclose(classes[:, target].numpy(), probabilities[:, klass == target].sum(-1), atol=1e-6)
    # tokens without a chord (specials) belong to no class
    assert float(classes.sum(-1).max()) <= 1.0 + 1e-5
