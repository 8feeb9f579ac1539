"""Noise-injection probe (reference section 6) on the exported models (numpy + onnxruntime).

For held-out contexts of ``context`` tokens, the tokens from ``start`` on are replaced by ``tk``
uniformly random non-special tokens (tk in ``lengths``), and the per-token loss difference
diff[i] = loss_noisy[i] - loss_clean[i] (target position i) is averaged over the contexts. The
baseline is the mean diff before the injection (0 for a causal model). Regions of the mean curve:
Peak from the injection until ``RECOVERY_RUN`` consecutive diffs are within ``tolerance`` nats of
the baseline; Assimilation from there to the end of the injected span + 4 (empty if the Peak
lasts longer); Recovery after both. The losses come from one ONNX Runtime pass per context (no
cache), so contexts stay within the 256-token window the models were trained on.

Contexts: consecutive windows of the test split of the corpus (parsed once, then cached), or of
MIDI files.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output

from .runtime import ContinuationModel
from .tokens import NOTE_BASE, VOCAB_SIZE

__all__ = [
    "ASSIMILATION_EXTRA",
    "RECOVERY_RUN",
    "Contexts",
    "contexts_from_cache",
    "contexts_from_midi",
    "loss_curves",
    "plot_curves",
    "probe",
    "regions",
    "write_csv",
]

RECOVERY_RUN = 5
ASSIMILATION_EXTRA = 4


@dataclass
class Contexts:
    """Held-out token windows [N, T] with their per-token valence/arousal [N, T, 2] and styles [N]."""

    tokens: np.ndarray
    va: np.ndarray
    styles: np.ndarray
    source: str


def regions(diff: np.ndarray, start: int, length: int, tolerance: float) -> dict[str, float | int]:
    """Peak / Assimilation / Recovery means of one mean diff curve (index = token position)."""
    if not 0 < start < len(diff) or length < 1:
        raise ValueError(f"injection start {start} / length {length} do not fit a curve of {len(diff)}")
    baseline = float(diff[:start].mean())
    near = np.abs(diff - baseline) <= tolerance
    peak_end = len(diff)
    for index in range(start, len(diff) - RECOVERY_RUN + 1):
        if near[index : index + RECOVERY_RUN].all():
            peak_end = index
            break
    assimilation_end = max(peak_end, min(len(diff), start + length + ASSIMILATION_EXTRA))

    def mean(part: np.ndarray) -> float:
        return float(part.mean()) if len(part) else float("nan")

    return {
        "baseline": baseline,
        "peak_end": peak_end,
        "peak": mean(diff[start:peak_end]),
        "assimilation": mean(diff[peak_end:assimilation_end]),
        "recovery": mean(diff[assimilation_end:]),
    }


def loss_curves(
    model: ContinuationModel, tokens: np.ndarray, va: np.ndarray, styles: np.ndarray
) -> np.ndarray:
    """Per-token next-token loss [N, T] in nats; column 0 (nothing predicts the first token) is 0."""
    rows = np.zeros(tokens.shape, dtype=np.float64)
    for index in range(len(tokens)):
        logits = model.logits(tokens[index, :-1], va[index, :-1], int(styles[index])).astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
        targets = tokens[index, 1:]
        rows[index, 1:] = log_norm - logits[np.arange(len(targets)), targets]
    return rows


def _windows(tokens: np.ndarray, va: np.ndarray, style: int, context: int, out: list) -> None:
    for first in range(0, len(tokens) - context + 1, context):
        out.append((tokens[first : first + context], va[first : first + context], style))


def _pick(found: list, count: int, source: str, context: int) -> Contexts:
    if not found:
        raise ValueError(f"{source}: no piece has {context} tokens; use a shorter --context")
    keep = np.sort(np.random.default_rng(0).permutation(len(found))[:count])
    return Contexts(
        np.stack([found[i][0] for i in keep]).astype(np.int64),
        np.stack([found[i][1] for i in keep]).astype(np.float32),
        np.array([found[i][2] for i in keep], dtype=np.int64),
        source,
    )


def contexts_from_cache(cache: Path | None, split: str, context: int, count: int,
                        progress: Callable[[str], None] | None = None) -> Contexts:
    """Consecutive windows of one split of the corpus (a seeded choice of ``count``); the split is
    parsed on first use and cached (``corpus.load_split_corpus``)."""
    from .corpus import DEFAULT_CACHE, load_split_corpus

    folder = Path(cache) if cache is not None else DEFAULT_CACHE
    data = load_split_corpus(split, folder, progress)
    found: list = []
    for piece in data.piece_indices(split):
        begin, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        _windows(data.tokens[begin:end], data.va[begin:end], int(data.styles[piece]), context, found)
    return _pick(found, count, f"{folder} ({split} split)", context)


def contexts_from_midi(paths: list[Path], context: int, count: int, style: int = 0) -> Contexts:
    """Consecutive windows of MIDI files (hands by track name or split at middle C)."""
    from .affect import token_va, valence_arousal
    from .offline import read_midi
    from .tokens import SOS, encode

    found: list = []
    for path in paths:
        notes, bar_steps, _ = read_midi(path)
        if not notes:
            continue
        end = max(n.end_steps for n in notes)
        tokens = np.array([SOS] + encode(notes, list(range(0, end, bar_steps))), dtype=np.int64)
        _windows(tokens, token_va(tokens, valence_arousal(notes, end)), style, context, found)
    return _pick(found, count, ", ".join(str(p) for p in paths), context)


def probe(
    models: dict[str, ContinuationModel],
    contexts: Contexts,
    start: int,
    lengths: list[int],
    tolerance: float = 0.1,
    seed: int = 0,
) -> tuple[list[dict], dict[tuple[str, int], np.ndarray]]:
    """CSV rows (one per model and noise length) and the mean diff curves."""
    context = contexts.tokens.shape[1]
    for length in lengths:
        if length < 1 or not 0 < start < start + length < context:
            raise ValueError(
                f"start {start} + noise length {length} must stay inside the {context}-token context"
            )
    rng = np.random.default_rng(seed)
    noisy = {}
    for length in lengths:
        tokens = contexts.tokens.copy()
        tokens[:, start : start + length] = rng.integers(NOTE_BASE, VOCAB_SIZE, (len(tokens), length))
        noisy[length] = tokens
    rows, curves = [], {}
    for name, model in models.items():
        clean = loss_curves(model, contexts.tokens, contexts.va, contexts.styles)
        for length in lengths:
            curve = (loss_curves(model, noisy[length], contexts.va, contexts.styles) - clean).mean(0)
            curves[(name, length)] = curve
            rows.append(
                {
                    "model": name,
                    "noise_tokens": length,
                    "contexts": len(contexts.tokens),
                    "clean_loss": clean[:, 1:].mean(),
                }
                | regions(curve, start, length, tolerance)
            )
    return rows, curves


def _atomic(path: Path, write) -> None:
    """``write(temporary)`` then rename: the shared writer (synced, the user's umask, no
    temporary left on any exception)."""
    with atomic_output(path) as temporary:
        write(str(temporary))


def write_csv(rows: list[dict], path: Path) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(
                {k: round(v, 5) if isinstance(v, float) else v for k, v in r.items()} for r in rows
            )

    _atomic(path, write)


def plot_curves(curves: dict[tuple[str, int], np.ndarray], start: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for name, _ in curves})
    figure, axes = plt.subplots(
        len(names), 1, figsize=(9, 3 * len(names)), sharex=True, sharey=True, squeeze=False
    )
    for axis, name in zip(axes[:, 0], names, strict=True):
        for (model, length), curve in sorted(curves.items()):
            if model == name:
                axis.plot(curve, label=f"{length} noise tokens", linewidth=0.8)
        axis.axvline(start, color="grey", linestyle=":")
        axis.set_title(name)
        axis.set_ylabel("loss_noisy - loss_clean (nats)")
        axis.legend(fontsize=7)
    axes[-1, 0].set_xlabel("token position")
    figure.tight_layout()
    _atomic(path, lambda temporary: figure.savefig(temporary, dpi=110, format="png"))
    plt.close(figure)
