"""Training data for the harmonizer: the classical cache, the lead sheets, or their union.

``--data classical`` is the raw cache of ``training.harmonizer.data`` cut by
``engines.harmonizer.dataset.make_windows`` (chords read from the texture, quarter beats, styles
chorale/classical/renaissance). ``--data leadsheets`` is the cache of
``training.harmonizer.leadsheets`` cut by ``leadsheet_windows``: one position per metric beat
(``engines.harmonizer.grid.beat_arrays``: dotted quarters in 6/8 and 12/8, halves in 2/2) and
the beat's label is the human chord sounding at its first 16th, so a held chord keeps its label
over every beat it covers and a change lands on the beat where it sounds (or the next beat when
it falls inside one). ``--data union`` is both, each source drawn with its share of the batches
(``--weights classical=1,openewld=1,pop909=2``; default: every window equally likely).

Lead sheets come from the committed split lists (``engines/harmonizer/splits/*_{train,val}.txt``),
classical pieces from the cache's own split column (the seeded split that wrote
``engines/harmonizer/splits/``); nothing from a test split is read here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from engines.harmonizer.dataset import Windows, _window_starts, load_raw, make_windows
from engines.harmonizer.grid import GridConfig, beat_arrays, build_sequence, time_signature_vector
from engines.harmonizer.leadsheet_corpus import SPLITS_DIR, STYLES, load, split_ids
from engines.harmonizer.vocab import PAD

__all__ = [
    "SOURCES",
    "SPLITS_DIR",
    "DATA_CHOICES",
    "STYLES",
    "TrainingData",
    "parse_weights",
    "leadsheet_windows",
    "concat_windows",
    "subset_windows",
    "load_training_data",
]

SOURCES: tuple[str, ...] = ("classical", "openewld", "pop909")
DATA_CHOICES: dict[str, tuple[str, ...]] = {
    "classical": ("classical",),
    "leadsheets": ("openewld", "pop909"),
    "union": SOURCES,
}
TRAINING_SPLITS = ("train", "val")


def parse_weights(text: str | None, sources: Iterable[str]) -> dict[str, float] | None:
    """'classical=1,pop909=0.5' -> {source: weight}; None when not given. A source of the chosen
    data left out of the text gets weight 0 (never drawn); unknown names are refused."""
    if not text:
        return None
    sources = tuple(sources)
    weights = dict.fromkeys(sources, 0.0)
    for item in text.split(","):
        name, separator, value = item.partition("=")
        name = name.strip()
        if not separator or name not in sources:
            raise ValueError(f"bad weight {item!r}: expected NAME=WEIGHT with NAME one of {', '.join(sources)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"bad weight {item!r}: {value!r} is not a number") from None
        if weights[name] < 0:
            raise ValueError(f"bad weight {item!r}: weights are not negative")
    if not any(weights.values()):
        raise ValueError(f"weights {text!r} give every source weight 0")
    return weights


def _split_ids(dataset: str, split: str, splits_dir: Path) -> set[str]:
    if split not in TRAINING_SPLITS:
        raise ValueError(f"training reads the train and val lists only, not {split!r}")
    return set(split_ids(dataset, split, splits_dir))


def _cut(sequence, config: GridConfig, stride: int) -> list[dict[str, np.ndarray]]:
    """Windows of one sequence (as make_windows cuts them: bar-aligned starts, pad to L)."""
    length, total = config.length, len(sequence.harmony)
    out = []
    for start in _window_starts(total, length, stride, np.flatnonzero(sequence.step < 0)):
        end = min(total, start + length)
        if end - start < 8:
            continue
        used = end - start
        row = {
            "melody": np.zeros((length, config.roll_dim), dtype=np.uint8),
            "harmony": np.full(length, PAD, dtype=np.int64),
            "va": np.zeros((length, 2), dtype=np.float32),
            "melody_pitch": np.full(length, -1, dtype=np.int16),
            "melody_onset": np.zeros(length, dtype=np.uint8),
        }
        for key, source in (("melody", sequence.melody_roll), ("harmony", sequence.harmony), ("va", sequence.va),
                            ("melody_pitch", sequence.melody_pitch), ("melody_onset", sequence.melody_onset)):
            row[key][:used] = source[start:end]
        out.append(row)
    return out


def leadsheet_windows(
    arrays: dict[str, np.ndarray],
    config: GridConfig,
    split: str,
    datasets: Iterable[str] = ("openewld", "pop909"),
    stride: int | None = None,
    splits_dir: Path = SPLITS_DIR,
) -> Windows:
    """Windows of the lead sheets of ``split`` (train or val) in the committed lists of
    ``datasets``. Q4: one position per metric beat (``beat_arrays``); Q16: the human chord per
    16th. Training strides by L/2, validation by L."""
    if stride is None:
        stride = config.length // 2 if split == "train" else config.length
    wanted = set().union(*(_split_ids(dataset, split, splits_dir) for dataset in datasets))
    rows: list[dict[str, np.ndarray]] = []
    styles, conditions, pieces, piece_ids = [], [], [], []
    for index, piece_id in enumerate(arrays["piece_id"]):
        if str(piece_id) not in wanted:
            continue
        lo, hi = int(arrays["offsets"][index]), int(arrays["offsets"][index + 1])
        if config.grid == "q4":
            beats = beat_arrays(arrays, lo, hi)
            sequence = build_sequence(config, beats["melody_pitches"], beats["melody_onset"], beats["chord"],
                                      beats["bar_start"], beats["va"])
        else:
            sequence = build_sequence(config, arrays["melody_pitch"][lo:hi], arrays["melody_onset"][lo:hi],
                                      arrays["chord"][lo:hi].astype(np.int64), arrays["bar_start"][lo:hi],
                                      arrays["va"][lo:hi])
        cut = _cut(sequence, config, stride)
        if not cut:
            continue
        piece_ids.append(str(piece_id))
        condition = time_signature_vector(*arrays["time_signature"][index])
        rows.extend(cut)
        styles.extend([int(arrays["style"][index])] * len(cut))
        conditions.extend([condition] * len(cut))
        pieces.extend([len(piece_ids) - 1] * len(cut))
    if not rows:
        raise ValueError(f"no lead-sheet windows for split {split!r} of {', '.join(datasets)} ({config.name})")
    return Windows(
        melody=np.stack([r["melody"] for r in rows]),
        harmony=np.stack([r["harmony"] for r in rows]),
        va=np.stack([r["va"] for r in rows]),
        style=np.array(styles, dtype=np.int64),
        condition=np.stack(conditions).astype(np.float32),
        melody_pitch=np.stack([r["melody_pitch"] for r in rows]),
        melody_onset=np.stack([r["melody_onset"] for r in rows]),
        piece=np.array(pieces, dtype=np.int64),
        piece_ids=piece_ids,
    )


def concat_windows(parts: list[Windows]) -> Windows:
    """One Windows of several (piece indices shifted to the joined piece list)."""
    arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
              for f in fields(Windows) if f.name not in ("piece", "piece_ids")}
    shifts = np.cumsum([0] + [len(p.piece_ids) for p in parts[:-1]])
    piece = np.concatenate([p.piece + shift for p, shift in zip(parts, shifts)])
    return Windows(**arrays, piece=piece, piece_ids=[i for p in parts for i in p.piece_ids])


def subset_windows(windows: Windows, index: np.ndarray) -> Windows:
    """The windows at ``index`` (piece ids kept whole)."""
    arrays = {f.name: getattr(windows, f.name)[index] for f in fields(Windows) if f.name != "piece_ids"}
    return Windows(**arrays, piece_ids=windows.piece_ids)


@dataclass
class TrainingData:
    """Train and validation windows of the chosen sources, which source each window is from,
    and the cumulative draw probabilities (None: every window equally likely)."""

    data: str
    sources: tuple[str, ...]
    train: Windows
    val: Windows
    train_source: np.ndarray  # int64 [W], index into sources
    val_source: np.ndarray
    weights: dict[str, float] | None
    cumulative: np.ndarray | None

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Window indices of one batch."""
        if self.cumulative is None:
            return rng.integers(0, len(self.train), size=batch)
        return np.minimum(np.searchsorted(self.cumulative, rng.random(batch), side="right"), len(self.train) - 1)

    def val_by_source(self) -> dict[str, Windows]:
        return {name: subset_windows(self.val, np.flatnonzero(self.val_source == number))
                for number, name in enumerate(self.sources) if (self.val_source == number).any()}

    def summary(self) -> dict:
        count = {name: int((self.train_source == n).sum()) for n, name in enumerate(self.sources)}
        share = count if self.weights is None else self.weights
        total = sum(share.values())
        return {
            "data": self.data,
            "train_windows": len(self.train),
            "val_windows": len(self.val),
            "train_windows_by_source": count,
            "val_windows_by_source": {name: int((self.val_source == n).sum()) for n, name in enumerate(self.sources)},
            "batch_share_by_source": {name: round(v / total, 4) for name, v in share.items()},
            "styles": list(self.styles),
        }

    @property
    def styles(self) -> tuple[str, ...]:
        """Style names the model's style embedding must cover (ids are shared by all sources)."""
        return STYLES[:3] if self.sources == ("classical",) else STYLES


def load_training_data(data: str, grid: GridConfig, cache: Path, weights: str | None = None,
                       splits_dir: Path = SPLITS_DIR) -> TrainingData:
    """Windows of ``data`` (classical | leadsheets | union) from the caches in ``cache``."""
    if data not in DATA_CHOICES:
        raise ValueError(f"unknown data {data!r}; valid: {', '.join(DATA_CHOICES)}")
    sources = DATA_CHOICES[data]
    parsed = parse_weights(weights, sources)
    train_parts, val_parts = [], []
    if "classical" in sources:
        raw = load_raw(cache)
        train_parts.append(make_windows(raw, grid, "train"))
        val_parts.append(make_windows(raw, grid, "val"))
    lead = [s for s in sources if s != "classical"]
    if lead:
        arrays = load(cache)
        for dataset in lead:
            train_parts.append(leadsheet_windows(arrays, grid, "train", (dataset,), splits_dir=splits_dir))
            val_parts.append(leadsheet_windows(arrays, grid, "val", (dataset,), splits_dir=splits_dir))
    train_source = np.concatenate([np.full(len(p), n, dtype=np.int64) for n, p in enumerate(train_parts)])
    val_source = np.concatenate([np.full(len(p), n, dtype=np.int64) for n, p in enumerate(val_parts)])
    cumulative = None
    if parsed is not None:
        counts = np.bincount(train_source, minlength=len(sources))
        per_window = np.array([parsed[s] for s in sources]) / np.maximum(counts, 1)
        probability = per_window[train_source]
        cumulative = np.cumsum(probability / probability.sum())
    return TrainingData(data, sources, concat_windows(train_parts), concat_windows(val_parts),
                        train_source, val_source, parsed, cumulative)
