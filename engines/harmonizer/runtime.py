"""Load the exported harmonizer with ONNX Runtime (numpy + onnxruntime only).

``onnx_models.open_model`` checks the card first (the file's sha256, the graph's inputs) and
opens one intra-op thread so a live host keeps its other cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.errors import ModelLoadError
from onnx_models import open_model

from .grid import TIME_SIGNATURE_DIM, GridConfig
from .vocab import VOCAB_SIZE

__all__ = ["DEFAULT_TEMPERATURE", "DEFAULT_TOP_P", "HarmonizerModel", "ModelLoadError", "shipped_names"]

DEFAULT_TEMPERATURE = 0.2  # the paper's nucleus sampling, used when a card names no calibration
DEFAULT_TOP_P = 0.9


def shipped_names(folder: Path) -> list[str]:
    """The harmonizer models in ``folder`` (``harmonizer*.card.json`` with a tokenizer: not the
    tagger that the offline decoding reads beside them)."""
    from onnx_models import read_card

    return [path.name.removesuffix(".card.json") for path in sorted(Path(folder).glob("harmonizer*.card.json"))
            if "tokenizer" in read_card(path)]


@dataclass
class HarmonizerModel:
    """An ORT session plus its card; `logits` runs one window."""

    session: ort.InferenceSession
    card: dict
    grid: GridConfig
    path: Path
    _tagger: object | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls, onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1
    ) -> HarmonizerModel:
        """Load and verify (``onnx_models.open_model``); raises ModelLoadError naming the file and the fix."""
        onnx_path = Path(onnx_path)
        session, card = open_model(onnx_path, card_path, threads=threads, required=("grid", "tokenizer"),
                                   export_hint="export it with `python -m training.harmonizer.export`")
        if card["tokenizer"].get("vocab_size") != VOCAB_SIZE:
            raise ModelLoadError(
                f"{onnx_path}: the card's vocab_size {card['tokenizer'].get('vocab_size')} != {VOCAB_SIZE}"
            )
        grid_fields = {k: card["grid"][k] for k in ("grid", "bars", "roll", "length")}
        return cls(session=session, card=card, grid=GridConfig(**grid_fields), path=onnx_path)

    @classmethod
    def named(cls, name: str, threads: int = 1) -> HarmonizerModel:
        """Load a shipped model by card name (`onnx_models/NAME.card.json` names its ONNX file)."""
        from onnx_models import model_path, models_dir, read_card  # looked up per call: tests move the folder

        card_path = models_dir() / f"{name}.card.json"
        if not card_path.exists():
            known = shipped_names(models_dir())
            raise ModelLoadError(
                f"no model card {card_path.name} in {models_dir()}; shipped: {', '.join(known)}"
            )
        return cls.load(model_path(card_path, read_card(card_path)), card_path, threads)

    @property
    def length(self) -> int:
        """The offline window (positions the model was trained on)."""
        return self.grid.length

    @property
    def dynamic_length(self) -> bool:
        """True when the graph takes any window of 1..length positions."""
        return bool(self.card.get("dynamic_length", False))

    @property
    def live_length(self) -> int:
        """Positions of one live per-beat decision's window (the card's `live_length`)."""
        return int(self.card.get("live_length", self.length)) if self.dynamic_length else self.length

    @property
    def beats(self) -> str:
        """'metric': one grid step per metric beat (a dotted quarter in 6/8, a half in 2/2), as
        lead-sheet models are trained; 'quarter': steps on quarter notes (the card's grid)."""
        return str(self.card["grid"].get("beats", "quarter"))

    @property
    def strategy(self) -> str:
        """Default decoding strategy: the card's calibrated `decoding`, else entropic."""
        return str(self.card.get("decoding", {}).get("strategy", "entropic"))

    @property
    def calls(self) -> int:
        """Default model calls a melody's window is decoded in (1: every chord at once, from one
        call): the card's calibrated `decoding`, else 10."""
        return int(self.card.get("decoding", {}).get("calls", 10))

    @property
    def rhythm(self) -> str:
        """Default harmonic rhythm: the card's calibrated `decoding`, else auto."""
        return str(self.card.get("decoding", {}).get("rhythm", "auto"))

    @property
    def temperature(self) -> float:
        """Default sampling temperature: the card's calibrated `decoding`, else the paper's 0.2."""
        return float(self.card.get("decoding", {}).get("temperature", DEFAULT_TEMPERATURE))

    @property
    def top_p(self) -> float:
        """Default nucleus mass: the card's `decoding`, else the paper's 0.9."""
        return float(self.card.get("decoding", {}).get("top_p", DEFAULT_TOP_P))

    @property
    def has_tagger(self) -> bool:
        """True when the card's `decoding` names a tagger (strategy 'tagged' is possible)."""
        return bool(self.card.get("decoding", {}).get("tagger"))

    def tagger(self) -> tuple[object, dict]:
        """The per-beat tagger the card's `decoding` names for strategy 'tagged' (``tagger.py``,
        beside this model's file, loaded once) and its settings: weight and window stride."""
        decoding = self.card.get("decoding", {})
        name = decoding.get("tagger")
        if not self.has_tagger:
            raise ValueError(f"{self.path.name}: its card names no tagger; strategy 'tagged' needs one "
                             f"(use another strategy, or the shipped harmonizer)")
        if self._tagger is None:
            from .tagger import ChordTagger

            self._tagger = ChordTagger.load(self.path.with_name(f"{name}.onnx"))
        return self._tagger, {"weight": float(decoding.get("tagger_weight", 1.0)),
                              "stride": int(decoding.get("window_stride", max(1, self.length // 8)))}

    @property
    def styles(self) -> list[str]:
        return list(self.card.get("styles", []))

    @property
    def default_style(self) -> str:
        """The style a user gets without asking: the card's `default_style`, else its first."""
        style = self.card.get("default_style")
        return style if style in self.styles else (self.styles[0] if self.styles else "chorale")

    def logits_batch(
        self,
        melody: np.ndarray,
        harmony: np.ndarray,
        va: np.ndarray,
        style: np.ndarray,
        condition: np.ndarray,
    ) -> np.ndarray:
        """Batched call: shapes [B, L, R], [B, L], [B, L, 2], [B], [B, 16] -> [B, L, V].

        L is the card's length, or any 1..length when the graph's length axis is dynamic.
        """
        batch, length = np.shape(harmony)[:2] if np.ndim(harmony) == 2 else (len(harmony), -1)
        if not (self.dynamic_length and 1 <= length <= self.length):
            length = self.length
        expected = {
            "melody": (batch, length, self.grid.roll_dim),
            "harmony": (batch, length),
            "va": (batch, length, 2),
            "style": (batch,),
            "condition": (batch, TIME_SIGNATURE_DIM),
        }
        feed = {
            "melody": np.asarray(melody, dtype=np.float32),
            "harmony": np.asarray(harmony, dtype=np.int64),
            "va": np.asarray(va, dtype=np.float32),
            "style": np.asarray(style, dtype=np.int64),
            "condition": np.asarray(condition, dtype=np.float32),
        }
        for name, shape in expected.items():
            if feed[name].shape != shape:
                raise ValueError(f"input {name!r} has shape {feed[name].shape}, expected {shape}")
        if feed["harmony"].min() < 0 or feed["harmony"].max() >= VOCAB_SIZE:
            raise ValueError(f"harmony tokens must lie in [0, {VOCAB_SIZE})")
        if feed["style"].min() < 0 or feed["style"].max() >= max(1, len(self.styles)):
            raise ValueError(f"style id must lie in [0, {len(self.styles)}) ({self.styles})")
        (logits,) = self.session.run(["logits"], feed)
        return logits

    def logits(
        self, melody: np.ndarray, harmony: np.ndarray, va: np.ndarray, style: int, condition: np.ndarray
    ) -> np.ndarray:
        """One window: [L, R], [L], [L, 2], style id, [16] -> [L, V] logits."""
        return self.logits_batch(
            np.asarray(melody)[None],
            np.asarray(harmony)[None],
            np.asarray(va)[None],
            np.array([style]),
            np.asarray(condition)[None],
        )[0]
