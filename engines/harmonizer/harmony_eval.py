"""Harmony evaluation of several systems on the same windows (numpy + onnxruntime only).

Systems: the ground truth, the `rule` engine's theory (diatonic triads chosen per beat from
the melody, key found on the window's melody) and every model x decoding strategy. Sets:
held-out chorales (`test`: every metric, means and MAE against the ground truth) and
out-of-domain folk melodies (`folk`: melody-side metrics and the chords' own statistics, no
ground truth). Windows: Q4 grid of the model, all chords masked, bars and padding given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.rule.theory import KeyFinder, choose_chord

from .dataset import DEFAULT_CACHE, RAW_FILE, Windows, load_raw, load_split, make_windows
from .decode import fill_masks
from .folk import FOLK_SPLIT, load_folk
from .grid import GridConfig
from .metrics import mean_absolute_errors, score_window
from .runtime import HarmonizerModel
from .vocab import BAR, MASK, PAD, nearest_token

__all__ = [
    "CHORALE_METRICS",
    "FOLK_METRICS",
    "SystemResult",
    "rule_row",
    "score_system",
    "model_system",
    "format_table",
    "EvalSet",
    "load_sets",
    "evaluate_all",
    "report_markdown",
]

CHORALE_METRICS = ("CHE", "CC", "CTD", "CTnCTR", "PCS", "MCTD", "HRHE", "HRC", "CBS", "CC16")
MAE_METRICS = ("CHE", "CC", "CTD", "CTnCTR", "PCS", "MCTD")
FOLK_METRICS = ("CTnCTR", "PCS", "MCTD", "CHE", "CC", "CC16")
Producer = Callable[[int, np.ndarray], tuple[np.ndarray, int]]  # (window, start row) -> (tokens, calls)


@dataclass
class SystemResult:
    """One system on one set: metric means, MAE against the ground truth, calls and time."""

    system: str
    windows: int
    means: dict[str, float]
    mae: dict[str, float] = field(default_factory=dict)
    mean_calls: float = 0.0
    mean_decode_ms: float = 0.0

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "windows": self.windows,
            "means": self.means,
            "mae": self.mae,
            "mean_calls": self.mean_calls,
            "mean_decode_ms": self.mean_decode_ms,
        }


def start_row(windows: Windows, index: int) -> np.ndarray:
    """All chords masked; `<bar>` and `<pad>` given."""
    truth = windows.harmony[index]
    return np.where(np.isin(truth, [BAR, PAD]), truth, MASK)


def last_melody_position(windows: Windows, index: int) -> int:
    sounding = np.flatnonzero(windows.melody_pitch[index] >= 0)
    return int(sounding[-1]) if len(sounding) else -1


def rule_row(melody_roll: np.ndarray, row: np.ndarray, sevenths: bool = False) -> np.ndarray:
    """The rule engine's chords on a window: key found on the whole window's melody pitch
    classes, then per step `choose_chord` on that step's melody pitch classes (weight 1 each)
    after the previous chord; a step without melody holds the previous chord."""
    finder = KeyFinder()
    for roll in melody_roll[:, :12]:
        for pc in np.flatnonzero(roll):
            finder.add(int(pc))
    key = finder.key
    out = np.array(row, dtype=np.int64, copy=True)
    previous, previous_token = None, None
    chosen: dict = {}  # choose_chord is pure: a song repeats few (notes, previous chord) pairs
    for position in np.flatnonzero(out == MASK):
        notes = tuple(np.flatnonzero(melody_roll[position, :12]).tolist())
        if notes or previous is None:
            chord = chosen.get((notes, previous))
            if chord is None:
                chord = chosen[notes, previous] = choose_chord(dict.fromkeys(notes, 1.0), key, previous, sevenths)
            if chord != previous:
                previous, previous_token = chord, nearest_token(chord.pitch_classes, chord.root)
        out[position] = previous_token
    return out


def _cc16(tokens: np.ndarray, truth: np.ndarray, scores: dict[str, float]) -> float:
    """Distinct chords per 16 bars of the window (bars = `<bar>` positions, at least one)."""
    bars = max(1, int(np.count_nonzero(truth == BAR)))
    return scores["CC"] * 16.0 / bars


def _means(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    out = {}
    for key in keys:
        values = [r[key] for r in rows if np.isfinite(r[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def score_system(
    name: str,
    windows: Windows,
    produce: Producer,
    count: int,
    metrics: Sequence[str],
    truth_rows: Sequence[dict[str, float]] | None = None,
) -> tuple[SystemResult, list[dict[str, float]]]:
    """Run `produce` on the first `count` windows and score each; MAE when truth rows are given."""
    rows, calls, seconds = [], [], []
    for index in range(count):
        truth = windows.harmony[index]
        started = time.perf_counter()
        tokens, used = produce(index, start_row(windows, index))
        seconds.append(time.perf_counter() - started)
        calls.append(used)
        scores = score_window(tokens, truth, windows.melody_pitch[index], windows.melody_onset[index], 1.0)
        scores["CC16"] = _cc16(tokens, truth, scores)
        rows.append(scores)
    result = SystemResult(
        system=name,
        windows=count,
        means=_means(rows, metrics),
        mean_calls=float(np.mean(calls)) if calls else 0.0,
        mean_decode_ms=float(np.mean(seconds) * 1e3) if seconds else 0.0,
    )
    if truth_rows is not None:
        mae = mean_absolute_errors(rows, truth_rows)
        result.mae = {k: mae[k] for k in MAE_METRICS}
    return result, rows


def model_system(
    model: HarmonizerModel, windows: Windows, strategy: str, calls: int, seed: int,
    temperature: float | None = None, top_p: float | None = None,
) -> Producer:
    """Producer decoding a window with `strategy` (nucleus sampling seeded per system; temperature
    and top-p default to the model card's `decoding`, else T 0.2, p 0.9)."""
    temperature = model.temperature if temperature is None else temperature
    top_p = model.top_p if top_p is None else top_p
    if model.grid.grid != "q4":
        raise ValueError(f"{model.path}: the evaluation uses the Q4 grid, the model has {model.grid.grid}")
    rng = np.random.default_rng(seed)

    def produce(index: int, row: np.ndarray) -> tuple[np.ndarray, int]:
        def logits_fn(harmony: np.ndarray) -> np.ndarray:
            return model.logits(
                windows.melody[index], harmony, windows.va[index], int(windows.style[index]),
                windows.condition[index],
            )

        result = fill_masks(logits_fn, row, last_melody_position(windows, index), strategy, rng,
                            temperature, top_p, calls)
        return result.harmony, result.calls

    return produce


def truth_system(windows: Windows) -> Producer:
    return lambda index, row: (windows.harmony[index], 0)


def rule_system(windows: Windows) -> Producer:
    return lambda index, row: (rule_row(windows.melody[index], row), 0)


def format_table(results: Sequence[SystemResult], metrics: Sequence[str], with_mae: bool) -> str:
    """Markdown table: metric means, then (when `with_mae`) the MAE of the six main metrics."""
    header = ["system", "calls", "ms"] + list(metrics) + ([f"MAE {k}" for k in MAE_METRICS] if with_mae else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        cells = [result.system, f"{result.mean_calls:.1f}", f"{result.mean_decode_ms:.0f}"]
        cells += [f"{result.means[k]:.3f}" for k in metrics]
        if with_mae:
            cells += [f"{result.mae[k]:.3f}" if result.mae else "" for k in MAE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class EvalSet:
    """Windows of one set; `truth` is False for melody-only sets (no ground-truth chords)."""

    name: str
    windows: Windows
    truth: bool
    pieces: int


def load_sets(
    grid: GridConfig,
    split: str,
    pieces: int | None,
    folk: int | None,
    cache: Path | None,
    progress: Callable[[str], None],
) -> list[EvalSet]:
    """Held-out chorale windows and, when `folk` is set, the first `folk` folk melodies.

    The chorales come from the training cache when `cache` holds one, else from the split's
    evaluation cache (pieces parsed once, on first use); the folk melodies are cached beside them.
    """
    cache_dir = Path(cache) if cache is not None else DEFAULT_CACHE
    if (cache_dir / RAW_FILE).exists():
        raw = load_raw(cache_dir)
    else:
        raw = load_split(split, pieces, cache_dir, progress)
    windows = make_windows(raw, grid, split)
    if pieces is not None:
        windows = _first_pieces(windows, pieces)
    sets = [EvalSet(f"{split} chorales", windows, True, len(set(windows.piece.tolist())))]
    if folk:
        progress(f"folk melodies: {folk}")
        folk_raw = load_folk(folk, cache_dir, progress)
        folk_windows = make_windows(folk_raw, grid, FOLK_SPLIT)
        melody_only = np.isin(folk_windows.harmony, [BAR, PAD])
        folk_windows.harmony = np.where(melody_only, folk_windows.harmony, MASK)
        sets.append(EvalSet("folk (out of domain)", folk_windows, False, len(folk_raw["piece_id"])))
    return sets


def _first_pieces(windows: Windows, pieces: int) -> Windows:
    keep = windows.piece < pieces
    return Windows(
        melody=windows.melody[keep], harmony=windows.harmony[keep], va=windows.va[keep],
        style=windows.style[keep], condition=windows.condition[keep],
        melody_pitch=windows.melody_pitch[keep], melody_onset=windows.melody_onset[keep],
        piece=windows.piece[keep], piece_ids=windows.piece_ids[:pieces],
    )


def model_label(model: HarmonizerModel) -> str:
    """The model's name as shipped (its file stem: harmonizer, harmonizer_random10, ...)."""
    return model.path.stem


def evaluate_all(
    models: Sequence[HarmonizerModel],
    sets: Sequence[EvalSet],
    strategies: Sequence[str],
    calls: int,
    seed: int,
    windows_limit: int | None,
    with_rule: bool,
    progress: Callable[[str], None],
    temperature: float | None = None,
    top_p: float | None = None,
) -> dict:
    """Every system on every set; JSON-ready. Temperature / top-p: given, else each model's card."""
    sampling = {id(m): (m.temperature if temperature is None else temperature,
                        m.top_p if top_p is None else top_p) for m in models}
    described = "; ".join(f"{model_label(m)} T {t:g} p {p:g}" for m in models for t, p in [sampling[id(m)]])
    report: dict = {
        "protocol": f"Q4 windows, all chords masked, bars and padding given; nucleus sampling {described}; "
        f"seed {seed}; {calls} calls for stages10/entropic",
        "models": [{"path": str(m.path), "label": model_label(m), "step": m.card.get("training", {}).get("step"),
                    "sha256": m.card.get("sha256"), "temperature": sampling[id(m)][0],
                    "top_p": sampling[id(m)][1]} for m in models],
        "sets": [],
    }
    for entry in sets:
        count = len(entry.windows) if windows_limit is None else min(windows_limit, len(entry.windows))
        metrics = CHORALE_METRICS if entry.truth else FOLK_METRICS
        systems: list[tuple[str, Producer]] = []
        truth_rows = None
        results: list[SystemResult] = []
        if entry.truth:
            truth_result, truth_rows = score_system("ground truth", entry.windows, truth_system(entry.windows),
                                                    count, metrics)
            results.append(truth_result)
        if with_rule:
            systems.append(("rule", rule_system(entry.windows)))
        for model in models:
            for strategy in strategies:
                producer = model_system(model, entry.windows, strategy, calls, seed, *sampling[id(model)])
                systems.append((f"{model_label(model)}/{strategy}", producer))
        for name, producer in systems:
            progress(f"{entry.name}: {name} ({count} windows)")
            result, _ = score_system(name, entry.windows, producer, count, metrics, truth_rows)
            results.append(result)
        report["sets"].append({
            "name": entry.name, "pieces": entry.pieces, "windows": count, "with_truth": entry.truth,
            "metrics": list(metrics), "results": [r.to_dict() for r in results],
        })
    return report


def report_markdown(report: dict) -> str:
    """The tables of `evaluate_all`'s report."""
    parts = [f"Protocol: {report['protocol']}."]
    for entry in report["sets"]:
        results = [SystemResult(**r) for r in entry["results"]]
        parts.append(f"\n**{entry['name']}**: {entry['pieces']} pieces, {entry['windows']} windows\n")
        parts.append(format_table(results, entry["metrics"], entry["with_truth"]))
    return "\n".join(parts)
