"""How continuations of held-out two-hand prompts keep the prompt's key, texture and motifs.

Prompts come from the held-out lists of the two-hand corpus (``splits/twohands_{val,test}.txt``):
one per POP909 song (pop) and several per music21 keyboard score (classical, few in the lists), each
``context_bars`` bars where both hands play in every bar, taken from the middle of the song's
candidate bars. A row (a model, the human's real next bars, or the last bars repeated) continues
each prompt for ``bars`` bars, and every continuation is measured against its own prompt:

- ``in_key``: share of new notes in the prompt's key (the Krumhansl-Schmuckler key of the prompt's
  onsets; a minor key's scale holds the natural minor and the raised sixth and seventh), divided by
  the prompt's own share. Prompts with an own share >= ``DIATONIC`` are the diatonic ones.
- per hand: onsets (distinct onset times) per bar over the prompt's, median pitch minus the
  prompt's, notes per bar, and bars where the hand is silent (nothing struck or held) although it
  played in every prompt bar.
- ``rhythm``: for each of the first two new bars, the best Jaccard similarity of its left-hand onset
  positions (grid steps in the bar) with any prompt bar's, averaged.
- ``motif``: share of the right hand's melodic interval trigrams (top note of each onset) that the
  prompt's right hand also has.

``rhythm`` and ``motif`` are also measured against another song's prompt (the next one in the list):
the random-prompt baseline a continuation that listens must clearly beat.
numpy, mido, music21 and onnxruntime only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.batch import Item, gather
from core.keys import key_correlations

from .corpus import DEFAULT_CACHE, SPLITS_DIR
from .defaults import USER_BIASES, USER_CHORD_VELOCITY
from .pieces import LOWER, UPPER, read_music21, read_pop909
from .tokens import HIGH_PITCH, LEFT, LOW_PITCH, RIGHT, STEPS_PER_QUARTER, NoteEvent

__all__ = [
    "DIATONIC",
    "Prompt",
    "load_songs",
    "measure",
    "prompts_of",
    "repeat_last_bars",
    "summarize",
]

DIATONIC = 0.9  # a prompt with at least this share of its notes in its key is diatonic
CLASSICAL_PROMPTS = 6  # prompts per classical piece: the lists hold few keyboard scores
EVAL_CACHE = "eval_twohands_{split}_v1.npz"
TRAINING_CACHE = "twohands_v1.npz"
_HANDS = (("right", RIGHT), ("left", LEFT))
_SCALES = {True: (0, 2, 4, 5, 7, 9, 11), False: (0, 2, 3, 5, 7, 8, 9, 10, 11)}


@dataclass
class Prompt:
    """One held-out prompt: its notes from step 0, the song's real next bars after it."""

    song_id: str
    source: str  # "pop" or "classical"
    bar_steps: int
    notes: list[NoteEvent]
    human: list[NoteEvent]  # the song's next bars, onsets from the prompt's end
    bars: int  # bars in the prompt
    key: tuple[int, bool] = field(init=False)  # (tonic pitch class, major)

    def __post_init__(self) -> None:
        self.key = prompt_key(self.notes)

    @property
    def end_steps(self) -> int:
        return self.bars * self.bar_steps


def prompt_key(notes: Sequence[NoteEvent]) -> tuple[int, bool]:
    """(tonic, major) of the notes' pitch-class histogram of onsets (C major without notes)."""
    histogram = np.bincount([n.pitch % 12 for n in notes], minlength=12).astype(np.float64)
    best = int(np.argmax(key_correlations(histogram))) if histogram.std() > 0 else 0
    return best % 12, best < 12


def in_key_share(notes: Sequence[NoteEvent], key: tuple[int, bool]) -> float:
    """Share of the notes whose pitch class is in the key's scale (nan without notes)."""
    if not notes:
        return math.nan
    scale = {(key[0] + step) % 12 for step in _SCALES[key[1]]}
    return sum(n.pitch % 12 in scale for n in notes) / len(notes)


# ---------------------------------------------------------------- songs and prompts


def _bar_steps(signature: str) -> int:
    numerator, denominator = (int(x) for x in signature.split("/"))
    return numerator * 4 * STEPS_PER_QUARTER // denominator


def _cache_rows(songs: list[tuple[str, str, np.ndarray]]) -> dict[str, np.ndarray]:
    rows = [np.column_stack([notes, np.full(len(notes), i)]) for i, (_, _, notes) in enumerate(songs)]
    return {"notes": np.concatenate(rows) if rows else np.zeros((0, 6)),
            "song_ids": np.array([s[0] for s in songs]), "signatures": np.array([s[1] for s in songs])}


def load_songs(split: str, datasets: Path | None, cache: Path = DEFAULT_CACHE,
               progress: Callable[[str], None] | None = None) -> list[tuple[str, str, np.ndarray]]:
    """(song id, time signature, notes rows (pitch, start, end, velocity, hand) in beats) of every
    song in ``splits/twohands_{split}.txt``: from the training cache when it is there, else read
    from POP909 (``datasets``/pop909/POP909) and music21's corpus once and kept in ``cache``."""
    ids = (SPLITS_DIR / f"twohands_{split}.txt").read_text().split()
    own = cache / EVAL_CACHE.format(split=split)
    for path in (own, cache / TRAINING_CACHE):
        if path.is_file():
            with np.load(path) as data:
                if "song_ids" not in data.files:
                    continue
                known = {str(s): i for i, s in enumerate(data["song_ids"])}
                if not all(i in known for i in ids):
                    continue
                if "notes" in data.files:
                    notes, signatures = data["notes"], data["signatures"]
                    song = notes[:, 5].astype(np.int64)
                    table = notes[:, :5]
                else:
                    song = data["song"].astype(np.int64)
                    table = np.column_stack([data["pitch"], data["start"], data["end"], data["velocity"], data["hand"]])
                    signatures = data["time_signatures"]
                order = np.argsort(song, kind="stable")
                bounds = np.searchsorted(song[order], np.arange(len(known) + 1))
                return [(i, str(signatures[known[i]]), table[order[bounds[known[i]]:bounds[known[i] + 1]]])
                        for i in ids]
    if datasets is None:
        raise FileNotFoundError("the held-out songs are not cached; give the data sets folder (--datasets)")
    songs = []
    for number, song_id in enumerate(ids, 1):
        if song_id.startswith("pop909/"):
            folder = datasets / "pop909" / "POP909" / song_id.split("/", 1)[1]
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a folder (POP909 is looked for under DATASETS/pop909/POP909)")
            song = read_pop909(folder)
        else:
            song = read_music21(song_id)
        songs.append((song_id, song.time_signature, song.notes))
        if progress and number % 10 == 0:
            progress(f"read {number}/{len(ids)} held-out songs")
    cache.mkdir(parents=True, exist_ok=True)
    from .corpus import save_arrays

    save_arrays(own, **_cache_rows(songs))
    return songs


def _events(rows: np.ndarray, offset_steps: int, end_steps: int) -> list[NoteEvent]:
    """Rows (pitch, start, end, velocity, hand) in beats -> grid notes from ``offset_steps``, those
    starting before ``end_steps``, cut at it."""
    events = []
    for pitch, start, end, velocity, hand in rows:
        onset = round(start * STEPS_PER_QUARTER) - offset_steps
        if onset < 0 or onset >= end_steps - offset_steps or not LOW_PITCH <= pitch <= HIGH_PITCH:
            continue
        stop = min(round(end * STEPS_PER_QUARTER), end_steps) - offset_steps
        events.append(NoteEvent(onset, RIGHT if hand == UPPER else LEFT, int(pitch), max(1, stop - onset),
                                int(np.clip(velocity, 1, 127))))
    return sorted(set(events))


def prompts_of(song_id: str, signature: str, rows: np.ndarray, context_bars: int, bars: int,
               count: int = 1) -> list[Prompt]:
    """Up to ``count`` prompts of a song, spread over its candidate bars: ``context_bars`` bars in
    which both hands strike in every bar, followed by ``bars`` bars with notes."""
    bar_steps = _bar_steps(signature)
    if bar_steps < 1 or not len(rows):
        return []
    onset_bars = np.floor(rows[:, 1] * STEPS_PER_QUARTER / bar_steps + 1e-9).astype(np.int64)
    total = int(onset_bars.max()) + 1
    played = np.zeros((2, max(total, 1)), bool)
    for hand, code in ((0, UPPER), (1, LOWER)):
        played[hand, onset_bars[(rows[:, 4] == code) & (onset_bars >= 0)]] = True
    both = played.all(axis=0)
    candidates = [b for b in range(1, total - context_bars - bars + 1)
                  if both[b:b + context_bars].all() and played[:, b + context_bars:b + context_bars + bars].any()]
    if not candidates:
        return []
    picks = sorted({candidates[int((k + 0.5) * len(candidates) / count)] for k in range(min(count, len(candidates)))})
    source = "pop" if song_id.startswith("pop909/") else "classical"
    prompts = []
    for first in picks:
        start, end = first * bar_steps, (first + context_bars) * bar_steps
        human = _events(rows, end, end + bars * bar_steps)
        prompts.append(Prompt(f"{song_id}@{first}", source, bar_steps, _events(rows, start, end), human, context_bars))
    return prompts


def held_out_prompts(split: str, datasets: Path | None, context_bars: int = 4, bars: int = 4,
                     songs: int | None = None, cache: Path = DEFAULT_CACHE,
                     progress: Callable[[str], None] | None = None) -> list[Prompt]:
    """One prompt per pop song (the first ``songs`` of the list), ``CLASSICAL_PROMPTS`` per
    classical piece."""
    prompts, pop = [], 0
    for song_id, signature, rows in load_songs(split, datasets, cache, progress):
        classical = not song_id.startswith("pop909/")
        if not classical and songs is not None and pop >= songs:
            continue
        made = prompts_of(song_id, signature, rows, context_bars, bars, CLASSICAL_PROMPTS if classical else 1)
        pop += bool(made) and not classical
        prompts += made
    return prompts


def repeat_last_bars(prompt: Prompt, bars: int, repeat: int = 2) -> list[NoteEvent]:
    """The baseline: the prompt's last ``repeat`` bars played again until ``bars`` bars are filled."""
    span = repeat * prompt.bar_steps
    tail = [n for n in prompt.notes if n.onset_steps >= prompt.end_steps - span]
    out = []
    for copy in range(math.ceil(bars / repeat)):
        shift = copy * span - (prompt.end_steps - span)
        for n in tail:
            onset = n.onset_steps + shift
            if onset < bars * prompt.bar_steps:
                out.append(NoteEvent(onset, n.hand, n.pitch, n.duration_steps, n.velocity))
    return out


# ---------------------------------------------------------------- measures


def _onset_positions(notes: Sequence[NoteEvent], hand: int, bar_steps: int, bar: int) -> frozenset[int]:
    return frozenset(n.onset_steps - bar * bar_steps for n in notes
                     if n.hand == hand and bar * bar_steps <= n.onset_steps < (bar + 1) * bar_steps)


def rhythm_similarity(notes: Sequence[NoteEvent], prompt: Prompt, first_bars: int = 2) -> float:
    """Mean over the first new bars of the best Jaccard similarity of the left hand's onset
    positions with any of the prompt's bars (nan when neither plays)."""
    reference = [_onset_positions(prompt.notes, LEFT, prompt.bar_steps, b) for b in range(prompt.bars)]
    reference = [r for r in reference if r]
    scores = []
    for bar in range(first_bars):
        new = _onset_positions(notes, LEFT, prompt.bar_steps, bar)
        if not new and not reference:
            continue
        scores.append(max((len(new & r) / len(new | r) for r in reference), default=0.0))
    return float(np.mean(scores)) if scores else math.nan


def _trigrams(notes: Sequence[NoteEvent]) -> list[tuple[int, int, int]]:
    tops: dict[int, int] = {}
    for n in notes:
        if n.hand == RIGHT:
            tops[n.onset_steps] = max(tops.get(n.onset_steps, 0), n.pitch)
    line = [tops[t] for t in sorted(tops)]
    steps = np.diff(line).tolist()
    return [tuple(steps[i:i + 3]) for i in range(len(steps) - 2)]


def motif_share(notes: Sequence[NoteEvent], prompt: Prompt) -> float:
    """Share of the right hand's interval trigrams that the prompt's right hand has (nan if none)."""
    new = _trigrams(notes)
    if not new:
        return math.nan
    known = set(_trigrams(prompt.notes))
    return sum(t in known for t in new) / len(new)


def _silent_bars(notes: Sequence[NoteEvent], hand: int, bar_steps: int, bars: int) -> int:
    sounding = np.zeros(bars, bool)
    for n in notes:
        if n.hand == hand:
            first, last = n.onset_steps // bar_steps, (n.end_steps - 1) // bar_steps
            sounding[max(0, first):min(bars, last + 1)] = True
    return int((~sounding).sum())


def measure(notes: Sequence[NoteEvent], prompt: Prompt, bars: int, other: Prompt) -> dict[str, float]:
    """Every measure of one continuation (onsets from the prompt's end) against its prompt; the
    ``*_random`` ones against ``other``, another song's prompt."""
    result: dict[str, float] = {}
    own = in_key_share(prompt.notes, prompt.key)
    result["prompt_in_key"] = own
    result["in_key"] = in_key_share(notes, prompt.key) / own if own > 0 and notes else math.nan
    for name, hand in _HANDS:
        mine = [n for n in notes if n.hand == hand]
        theirs = [n for n in prompt.notes if n.hand == hand]
        onsets_new = len({n.onset_steps for n in mine}) / bars
        onsets_prompt = len({n.onset_steps for n in theirs}) / prompt.bars
        result[f"{name}_density"] = onsets_new / onsets_prompt if onsets_prompt else math.nan
        pitches = [float(np.median([n.pitch for n in group])) for group in (mine, theirs) if group]
        result[f"{name}_pitch"] = pitches[0] - pitches[1] if len(pitches) == 2 else math.nan
        result[f"{name}_notes_per_bar"] = len(mine) / bars
        always = _silent_bars(prompt.notes, hand, prompt.bar_steps, prompt.bars) == 0
        result[f"{name}_silent_bars"] = float(_silent_bars(notes, hand, prompt.bar_steps, bars)) if always else 0.0
    result["rhythm"] = rhythm_similarity(notes, prompt)
    result["rhythm_random"] = rhythm_similarity(notes, other)
    result["motif"] = motif_share(notes, prompt)
    result["motif_random"] = motif_share(notes, other)
    return result


def summarize(rows: Sequence[dict[str, float]], diatonic: Sequence[bool]) -> dict[str, float]:
    """The table's figures over one row's continuations (nan-aware means; shares of targets met)."""
    def values(key: str, keep: Sequence[bool] | None = None) -> np.ndarray:
        picked = [r[key] for r, k in zip(rows, keep if keep is not None else [True] * len(rows), strict=True) if k]
        array = np.array(picked, dtype=np.float64)
        return array[~np.isnan(array)]

    def mean(array: np.ndarray) -> float:
        return float(array.mean()) if len(array) else math.nan

    in_key = values("in_key", diatonic)
    summary = {
        "continuations": len(rows),
        "diatonic": int(sum(diatonic)),
        "in_key": mean(in_key),
        "in_key_min": float(in_key.min()) if len(in_key) else math.nan,
        "in_key_met": mean((in_key >= 0.9).astype(float)),
        "rhythm": mean(values("rhythm")), "rhythm_random": mean(values("rhythm_random")),
        "motif": mean(values("motif")), "motif_random": mean(values("motif_random")),
    }
    for name, _ in _HANDS:
        density, pitch = values(f"{name}_density"), values(f"{name}_pitch")
        summary[f"{name}_density"] = float(np.median(density)) if len(density) else math.nan
        summary[f"{name}_density_met"] = mean(((density >= 0.5) & (density <= 2.0)).astype(float))
        summary[f"{name}_pitch"] = mean(np.abs(pitch))
        summary[f"{name}_pitch_met"] = mean((np.abs(pitch) <= 12).astype(float))
        summary[f"{name}_notes_per_bar"] = mean(values(f"{name}_notes_per_bar"))
        summary[f"{name}_silent_bars"] = float(values(f"{name}_silent_bars").sum())
    return summary


# ---------------------------------------------------------------- running the rows


@dataclass(frozen=True)
class Decoding:
    """How a model row samples: what ``scorebridge continue`` does by default."""

    temperature: float = 1.0
    top_p: float = 0.95
    key_bias: float = USER_BIASES["key_bias"]
    pattern_bias: float = USER_BIASES["pattern_bias"]
    motif_bias: float = USER_BIASES["motif_bias"]
    density_bias: float = USER_BIASES["density_bias"]
    register: str = "prompt"
    grid: str = "prompt"
    chord_velocity: bool = USER_CHORD_VELOCITY


@dataclass(frozen=True)
class ContinueJob:
    """The batch layer's job (``core.batch``): a worker loads every model once; an item is one
    (model, prompt, seed), sampled with that seed, so the notes do not depend on which worker,
    process or Ray node continues it."""

    models: tuple[str, ...]  # .onnx paths
    decoding: Decoding
    bars: int

    def settings(self) -> dict:
        return {"models": list(self.models), "decoding": self.decoding.__dict__, "bars": self.bars}

    def setup(self, threads: int) -> dict[str, tuple]:
        """Every model with one intra-op thread whatever the worker's share: a decoder step is too
        small to split (two threads took twice as long on a loaded 2-core machine)."""
        from .runtime import ContinuationModel

        loaded = {}
        for path in self.models:
            model = ContinuationModel.load(path, threads=1)
            styles = model.card.get("styles", [])
            loaded[path] = (model, styles.index("piano") if "piano" in styles else 0)
        return loaded

    def process(self, loaded: dict[str, tuple], item: Item) -> list[NoteEvent]:
        from .offline import continue_notes
        from .sample import SamplingConfig

        model, style = loaded[self.models[item.inputs["model"]]]
        prompt, decoding = item.inputs["prompt"], self.decoding
        config = SamplingConfig(temperature=decoding.temperature, top_p=decoding.top_p, seed=item.inputs["seed"],
                                chord_velocity=decoding.chord_velocity,
                                **{name: getattr(decoding, name) for name in USER_BIASES})
        notes = continue_notes(model, prompt.notes, prompt.bar_steps, self.bars, config, prompt.bars, style,
                               register=decoding.register, grid=decoding.grid)
        return [NoteEvent(n.onset_steps - prompt.end_steps, n.hand, n.pitch, n.duration_steps, n.velocity)
                for n in notes]


def continue_prompts(model_paths: Sequence[Path], prompts: Sequence[Prompt], seeds: Sequence[int], bars: int,
                     decoding: Decoding, workers: int | None = 1, ray_address: str | None = None,
                     progress: Callable[[str], None] = lambda text: None
                     ) -> list[tuple[list[list[NoteEvent]], list[float]]]:
    """Per model: the continuations of every (prompt, seed), prompt-major, and each one's
    seconds, through the batch layer: ``workers`` processes (1: this process; None: one per
    core) or a Ray cluster at ``ray_address``."""
    items = [Item(f"{m}/{i}/{k}", (), {"model": m, "prompt": prompt, "seed": seed})
             for m in range(len(model_paths)) for i, prompt in enumerate(prompts) for k, seed in enumerate(seeds)]
    job = ContinueJob(tuple(str(path) for path in model_paths), decoding, bars)
    results, where = gather(job, items, workers, ray_address)
    progress(f"{len(items)} continuations on {where}")
    per_model = len(prompts) * len(seeds)
    return [([r.value for r in results[m * per_model: (m + 1) * per_model]],
             [r.seconds for r in results[m * per_model: (m + 1) * per_model]]) for m in range(len(model_paths))]


def evaluate_rows(prompts: Sequence[Prompt], rows: dict[str, Sequence[Sequence[NoteEvent]]], seeds: int,
                  bars: int) -> dict[str, dict[str, dict[str, float]]]:
    """row -> group ("all", "pop", "classical") -> ``summarize``d figures. A row holds one
    continuation per prompt, or ``seeds`` per prompt (prompt-major)."""
    report: dict[str, dict[str, dict[str, float]]] = {}
    partner = {i: prompts[(i + 1) % len(prompts)] for i in range(len(prompts))}
    for i, prompt in enumerate(prompts):  # the "random" prompt is another song's
        for step in range(1, len(prompts)):
            other = prompts[(i + step) % len(prompts)]
            if other.song_id.split("@")[0] != prompt.song_id.split("@")[0]:
                partner[i] = other
                break
    for name, continuations in rows.items():
        per = len(continuations) // max(1, len(prompts))
        measured, owners = [], []
        for index, notes in enumerate(continuations):
            owner = index // per
            measured.append(measure(notes, prompts[owner], bars, partner[owner]))
            owners.append(owner)
        groups = {"all": list(range(len(measured)))}
        for source in ("pop", "classical"):
            groups[source] = [k for k, o in enumerate(owners) if prompts[o].source == source]
        report[name] = {}
        for group, members in groups.items():
            if not members:
                continue
            chosen = [measured[k] for k in members]
            diatonic = [measured[k]["prompt_in_key"] >= DIATONIC for k in members]
            report[name][group] = summarize(chosen, diatonic)
    return report
