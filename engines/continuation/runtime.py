"""Load the exported continuation model with ONNX Runtime (numpy + onnxruntime only).

``onnx_models.open_model`` checks the card first (the file's sha256, the graph's inputs) and
opens one intra-op thread so a live host keeps its other cores. Generation goes through a
``Decoder``: a fixed-size key/value ring buffer (``slots`` keys per layer, views of one numpy
block bound once to the session with IO binding), so one step costs one short pass and no copy
of the cache. The graph returns only the new keys/values; the decoder writes them into the slot
of their position (position % slots), so the context slides: a token attends to at most
``slots`` earlier tokens plus itself (255 + 1 = the 256-token training window by default), and
relative positions stay exact under RoPE.

Steps of the default cache size run on a second session of the same verified file whose free
dimensions are fixed (batch 1, one token, ``DEFAULT_SLOTS``): ONNX Runtime then folds the shape
arithmetic out of the graph (204 -> 148 nodes). The two fusions that would change the arithmetic
(MatMul + Add -> Gemm, SkipLayerNormalization) stay off, so its logits are bit for bit the
dynamic session's (``tests/test_continuation_onnx.py``).

Threads and lifetimes (the reverted first landing of this session was suspected of a SIGSEGV in
``serve``; see docs/continuation.md, "Threads"): a ``Decoder`` belongs to the one thread that
generates with it. Its arrays (the cache block, the one-token inputs, the outputs) are its own,
allocated once, bound once and never rebound or reallocated, and it keeps every ``OrtValue`` it
binds and the session it binds them to, so nothing ORT reads or writes can be freed while it
lives. A ``ContinuationModel`` may be shared by decoders on several threads: every run of its
sessions and every new binding takes the model's ``run_lock``, so the shared fixed-shape step
session never runs beside another run or a binding of itself. Swapping the model (the engine's
``embedding`` parameter) builds a new ``ContinuationModel``; a continuation in flight keeps the one
it started with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.errors import ModelLoadError
from onnx_models import models_dir, open_model

from .tokens import VOCAB_SIZE

__all__ = ["DEFAULT_MODEL", "DEFAULT_SLOTS", "SCORE_MODEL", "EMPTY_SLOT", "ContinuationModel", "Decoder", "input_names"]

DEFAULT_MODEL = models_dir() / "continuation.onnx"
PLAIN_MODEL = DEFAULT_MODEL.with_name("continuation_plain.onnx")
# The 4-layer Smart model that was `continuation` until 2026-12-08: the score engine composes its
# piano with it (its register follows arousal more widely; docs/continuation.md).
SCORE_MODEL = DEFAULT_MODEL.with_name("continuation_d4.onnx")
DEFAULT_SLOTS = 255
EMPTY_SLOT = -1e9  # additive attention bias of an empty slot
# Fusions the fixed-shape step session leaves out: each changes the logits in the last bits.
EXACT_STEP_DISABLED = ("MatMulAddFusion", "SkipLayerNormFusion")


def _step_session(onnx_path: Path, threads: int, slots: int, optimized_path: Path | None = None
                  ) -> ort.InferenceSession:
    """A session of the (already verified) file for one-token steps over ``slots`` cache slots;
    ``optimized_path``: where ORT writes the graph it runs (benchmarks count its nodes)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for name, size in (("batch", 1), ("length", 1), ("slots", slots)):
        options.add_free_dimension_override_by_name(name, size)
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(EXACT_STEP_DISABLED))
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for a file it cannot read
        raise ModelLoadError(f"{onnx_path}: ONNX Runtime cannot load it for steps: {error}") from error


def input_names(layers: int) -> tuple[str, ...]:
    """Graph inputs: the new tokens, then one key and one value array per layer."""
    cache = tuple(f"past_{kind}_{layer}" for layer in range(layers) for kind in ("key", "value"))
    return ("tokens", "va", "style", "positions", "past_bias") + cache


@dataclass
class ContinuationModel:
    """An ORT session plus its card."""

    session: ort.InferenceSession
    card: dict
    path: Path
    layers: int
    heads: int
    head_dim: int
    step_session: ort.InferenceSession | None = None  # one-token steps over DEFAULT_SLOTS; None: ``session``
    # held by every run of either session and every new binding (see the module docstring)
    run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(
        cls, onnx_path: str | Path = DEFAULT_MODEL, card_path: str | Path | None = None, threads: int = 1
    ) -> ContinuationModel:
        """Load and verify (``onnx_models.open_model``); raises ModelLoadError naming the file and the fix."""
        onnx_path = Path(onnx_path)
        session, card = open_model(onnx_path, card_path, threads=threads, required=("model",),
                                   export_hint="export it with `python -m training.continuation.export`")
        if card["model"].get("vocab_size") != VOCAB_SIZE:
            raise ModelLoadError(
                f"{onnx_path}: the card's vocab_size {card['model'].get('vocab_size')} "
                f"!= tokenizer {VOCAB_SIZE}"
            )
        model = card["model"]
        names = tuple(i.name for i in session.get_inputs())
        if names != input_names(model["layers"]):
            raise ModelLoadError(
                f"{onnx_path}: inputs {names} != expected {input_names(model['layers'])}; re-export it"
            )
        return cls(
            session, card, onnx_path, model["layers"], model["heads"], model["d_model"] // model["heads"],
            _step_session(onnx_path, threads, DEFAULT_SLOTS),
        )

    @property
    def valence_lead(self) -> int:
        """Quarters the training valence labels look ahead (0 for cards that predate the field)."""
        return int(self.card.get("labels", {}).get("valence_lead_quarters", 0))

    def decoder(self, style: int = 0, slots: int = DEFAULT_SLOTS) -> Decoder:
        """A fresh decoder (empty cache) for one sequence of one style."""
        return Decoder(self, style, slots)

    def logits(self, tokens: np.ndarray, va: np.ndarray, style: int) -> np.ndarray:
        """Logits [T, V] of a whole sequence in one pass (no cache; for scoring)."""
        return self.decoder(style, slots=1).prefill(tokens, va, keep_all=True)


class Decoder:
    """Incremental decoding of one sequence over a sliding ring-buffer cache."""

    def __init__(self, model: ContinuationModel, style: int, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model, self.slots, self.position = model, slots, 0
        # one block [layer * 2 + (key, value), heads, slots, head_dim]; each graph input is a view of it
        self._cache = np.zeros((2 * model.layers, model.heads, slots, model.head_dim), np.float32)
        self.cache = [self._cache[row : row + 1] for row in range(2 * model.layers)]
        self.bias = np.full(slots, EMPTY_SLOT, np.float32)
        self._token = np.zeros((1, 1), np.int64)
        self._va = np.zeros((1, 1, 2), np.float32)
        self._style = np.array([style], np.int64)
        self._position = np.zeros(1, np.int64)
        self._logits = np.zeros((1, 1, VOCAB_SIZE), np.float32)
        self._new = np.zeros((1, 2 * model.layers * model.heads, 1, model.head_dim), np.float32)
        self._new_rows = self._new.reshape(2 * model.layers, model.heads, model.head_dim)
        fixed = model.step_session is not None and slots == DEFAULT_SLOTS
        self._session = model.step_session if fixed else model.session
        # Bound once, never rebound: each OrtValue wraps (does not copy) one of this decoder's
        # arrays, and ``_bound`` keeps them (and through them the arrays) for the decoder's life.
        inputs = [self._token, self._va, self._style, self._position, self.bias, *self.cache]
        self._bound = {name: ort.OrtValue.ortvalue_from_numpy(array)
                       for name, array in zip(input_names(model.layers), inputs)}
        outputs = {"logits": ort.OrtValue.ortvalue_from_numpy(self._logits),
                   "new_kv": ort.OrtValue.ortvalue_from_numpy(self._new)}
        with model.run_lock:
            self._binding = self._session.io_binding()
            for name, value in self._bound.items():
                self._binding.bind_ortvalue_input(name, value)
            for name, value in outputs.items():
                self._binding.bind_ortvalue_output(name, value)
        self._bound.update(outputs)

    def _store(self, new_kv: np.ndarray, positions: np.ndarray) -> None:
        """Write new keys/values [1, layers * 2 * heads, T, head_dim] into their slots (the last
        ``slots`` positions: earlier ones would be overwritten)."""
        kept = positions[-self.slots :]
        rows = new_kv[0, :, -len(kept) :].reshape(2 * self.model.layers, self.model.heads, len(kept), -1)
        slots = kept % self.slots
        self._cache[:, :, slots] = rows
        self.bias[slots] = 0.0

    def prefill(self, tokens: np.ndarray, va: np.ndarray, keep_all: bool = False) -> np.ndarray:
        """Feed several tokens in one pass; the logits of the last one [V] (all [T, V] if keep_all)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        va = np.asarray(va, dtype=np.float32).reshape(1, -1, 2)
        if tokens.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        if va.shape[1] != tokens.shape[1]:
            raise ValueError(f"va has {va.shape[1]} rows for {tokens.shape[1]} tokens")
        positions = np.arange(self.position, self.position + tokens.shape[1], dtype=np.int64)
        feed = dict(
            zip(input_names(self.model.layers), [tokens, va, self._style, positions, self.bias, *self.cache])
        )
        with self.model.run_lock:
            logits, new_kv = self.model.session.run(["logits", "new_kv"], feed)
        self._store(new_kv, positions)
        self.position += tokens.shape[1]
        return logits[0] if keep_all else logits[0, -1]

    def step(self, token: int, va: tuple[float, float] | np.ndarray = (0.0, 0.0)) -> np.ndarray:
        """Feed one token; the logits of the next [V] (a view, valid until the next step)."""
        self._token[0, 0] = token
        self._va[0, 0] = va
        self._position[0] = self.position
        with self.model.run_lock:
            self._session.run_with_iobinding(self._binding)
        slot = self.position % self.slots
        self._cache[:, :, slot] = self._new_rows
        self.bias[slot] = 0.0
        self.position += 1
        return self._logits[0, 0]
