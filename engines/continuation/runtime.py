"""Load the exported continuation model with ONNX Runtime (numpy + onnxruntime only).

The card is checked first (the ONNX file's sha256, the input names); one intra-op thread so a
live host keeps its other cores. ``run`` takes new tokens and the key/value cache and returns
the logits and the grown cache, so generation costs one short pass per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnx_models import sha256_of

from bridge.errors import ModelLoadError

from .tokens import VOCAB_SIZE

__all__ = ["DEFAULT_MODEL", "INPUT_NAMES", "ContinuationModel"]

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "onnx_models" / "continuation.onnx"
INPUT_NAMES = ("tokens", "va", "style", "positions", "past")



@dataclass
class ContinuationModel:
    """An ORT session plus its card."""

    session: ort.InferenceSession
    card: dict
    path: Path
    layers: int
    heads: int
    head_dim: int

    @classmethod
    def load(
        cls, onnx_path: str | Path = DEFAULT_MODEL, card_path: str | Path | None = None, threads: int = 1
    ) -> ContinuationModel:
        """Load and verify; raises ModelLoadError naming the file and the fix."""
        onnx_path = Path(onnx_path)
        card_path = Path(card_path) if card_path else onnx_path.with_name(onnx_path.stem + ".card.json")
        if not onnx_path.exists():
            raise ModelLoadError(
                f"{onnx_path} not found; export it with `python -m engines.continuation.export`"
            )
        if not card_path.exists():
            raise ModelLoadError(f"{card_path} not found; every model needs its card (re-export)")
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError as error:
            raise ModelLoadError(f"{card_path}: invalid JSON at line {error.lineno}: {error.msg}") from error
        missing = [key for key in ("model_file", "sha256", "inputs", "outputs", "model") if key not in card]
        if missing:
            raise ModelLoadError(f"{card_path}: missing keys {missing}; re-export the model")
        if card["model_file"] != onnx_path.name:
            raise ModelLoadError(f"{card_path} describes {card['model_file']!r}, not {onnx_path.name!r}")
        if sha256_of(onnx_path) != card["sha256"]:
            raise ModelLoadError(
                f"{onnx_path}: sha256 differs from {card_path}; the file changed after export"
            )
        if card["model"].get("vocab_size") != VOCAB_SIZE:
            raise ModelLoadError(
                f"{card_path}: vocab_size {card['model'].get('vocab_size')} != tokenizer {VOCAB_SIZE}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"{onnx_path}: ONNX Runtime cannot load it: {error}") from error
        names = tuple(i.name for i in session.get_inputs())
        if names != INPUT_NAMES:
            raise ModelLoadError(f"{onnx_path}: inputs {names} != expected {INPUT_NAMES}")
        model = card["model"]
        return cls(
            session, card, onnx_path, model["layers"], model["heads"], model["d_model"] // model["heads"]
        )

    def empty_cache(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.layers, 2, batch, self.heads, 0, self.head_dim), dtype=np.float32)

    def run(
        self, tokens: np.ndarray, va: np.ndarray, style: int, past: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits [T, V] of T new tokens (one sequence) and the cache including them."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        va = np.asarray(va, dtype=np.float32).reshape(1, -1, 2)
        if va.shape[1] != tokens.shape[1]:
            raise ValueError(f"va has {va.shape[1]} rows for {tokens.shape[1]} tokens")
        start = past.shape[4]
        logits, present = self.session.run(
            None,
            {
                "tokens": tokens,
                "va": va,
                "style": np.array([style], dtype=np.int64),
                "positions": np.arange(start, start + tokens.shape[1], dtype=np.int64),
                "past": past,
            },
        )
        return logits[0], present

    def parity_check(self, parity_path: str | Path, atol: float = 1e-4) -> float:
        """Run the export's parity example (new tokens on a filled cache); returns max |diff|."""
        with np.load(parity_path) as data:
            feed = {name: data[name] for name in INPUT_NAMES}
            logits, present = self.session.run(["logits", "present"], feed)
            difference = max(
                float(np.abs(logits - data["expected_logits"]).max()),
                float(np.abs(present - data["expected_present"]).max()),
            )
        if difference > atol:
            raise ModelLoadError(
                f"{self.path}: outputs differ from the export's by {difference:.2e} (> {atol})"
            )
        return difference
