"""Harmony evaluation on held-out lead sheets (numpy + onnxruntime; music21 and mido only for
the first-use parse of the songs).

Songs: the committed test (or val) lists of OpenEWLD and POP909 (``leadsheet_corpus``), back in
their own keys, one position per metric beat (``grid.beat_arrays``). Systems give a chord per
beat: ``human`` (the annotated chord at the beat's first 16th), ``rule`` (the rule engine's
theory), ``tonic`` (the tonic triad of the key ``harmonize`` finds, per section), ``best-triad``
(per bar, the diatonic triad of that key covering most of the bar's melody) and every model,
decoded by ``harmonize`` as ``scorebridge harmonize`` runs it (``harmonize_song``). Figures per song come from
``leadsheet_metrics``; groups (all, each data set, each style) average them with every song
weighing the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.batch import Item, gather
from core.keys import section_keys

from .clip import clip_grid
from .dataset import _window_starts
from .grid import GridConfig, beat_arrays, build_sequence, melody_roll
from .harmonize import harmonize
from .harmony_eval import rule_row
from .leadsheet_corpus import SETS, STYLES
from .leadsheet_metrics import (
    KEY_RELATIONS,
    agreement,
    changes_per_bar,
    chord_tone_ratio,
    ends_on_tonic,
    key_shares,
    window_melody,
    window_scores,
)
from .runtime import HarmonizerModel
from .vocab import BAR, MASK, NUM_QUALITIES, NUM_SPECIALS, token_bitmaps, transpose_tokens

__all__ = [
    "EVAL_FIELDS",
    "METRICS",
    "Song",
    "songs_from_arrays",
    "select_songs",
    "found_keys",
    "best_triad_chords",
    "harmonize_song",
    "DecodeJob",
    "ModelSpec",
    "Produced",
    "baselines",
    "decode_models",
    "evaluate_songs",
    "report_markdown",
]

EVAL_FIELDS = ("melody_pitch", "melody_onset", "chord", "bar_start", "beat_start", "key", "va")
METRICS = ("majmin", "sevenths", "changes_per_bar", "chord_tones", "tonic_ending", "PCS", "CTnCTR", "CHE", "CC")
WINDOW = GridConfig()  # the chorale evaluation's windows: L 80 with bar positions


@dataclass
class Song:
    """One held-out song in its own key: the 16th grid and its metric beats."""

    piece_id: str
    dataset: str
    style: str
    time_signature: tuple[int, int]
    tonic: int  # annotated key of the song
    mode: str
    melody: np.ndarray  # int64 [N] top melody pitch per 16th, -1 rest
    bar16: np.ndarray  # uint8 [N]
    start: np.ndarray  # int64 [B] first 16th of each metric beat
    pitches: np.ndarray  # int64 [B, K] every melody pitch of the beat, -1 padded
    onset: np.ndarray  # uint8 [B]
    bar_start: np.ndarray  # uint8 [B]
    human: np.ndarray  # int64 [B] annotated chord at the beat's first 16th
    keys: np.ndarray  # int64 [B] annotated local key at the beat's first 16th (tonic pc, +12 minor; -1 none)

    @property
    def beats(self) -> int:
        return len(self.start)


def songs_from_arrays(arrays: dict[str, np.ndarray]) -> list[Song]:
    """Cache arrays (key-normalized, ``shift`` per song) -> songs in their own keys."""
    styles = [str(s) for s in arrays["styles"]]
    songs = []
    for index, piece_id in enumerate(arrays["piece_id"]):
        lo, hi = int(arrays["offsets"][index]), int(arrays["offsets"][index + 1])
        shift = int(arrays["shift"][index])
        beats = beat_arrays(arrays, lo, hi)
        melody = arrays["melody_pitch"][lo:hi].astype(np.int64)
        pitches = beats["melody_pitches"].astype(np.int64)
        keys = arrays["key"][lo:hi][beats["start"]].astype(np.int64)
        songs.append(Song(
            str(piece_id), str(arrays["dataset"][index]), styles[int(arrays["style"][index])],
            (int(arrays["time_signature"][index][0]), int(arrays["time_signature"][index][1])),
            int(arrays["tonic"][index]), str(arrays["mode"][index]),
            np.where(melody >= 0, melody - shift, -1), arrays["bar_start"][lo:hi].astype(np.uint8),
            beats["start"].astype(np.int64), np.where(pitches >= 0, pitches - shift, -1), beats["melody_onset"],
            beats["bar_start"], transpose_tokens(beats["chord"], -shift),
            np.where(keys >= 0, (keys % 12 - shift) % 12 + 12 * (keys >= 12), -1)))
    return songs


def select_songs(songs: Sequence[Song], styles: Sequence[str] | None = None,
                 per_group: int | None = None) -> list[Song]:
    """Songs of ``styles`` (all when None), the first ``per_group`` of each data set and style."""
    kept, seen = [], {}
    for song in songs:
        group = (song.dataset, song.style)
        if styles is not None and song.style not in styles:
            continue
        if per_group is not None and seen.get(group, 0) >= per_group:
            continue
        seen[group] = seen.get(group, 0) + 1
        kept.append(song)
    return kept


# ---------------------------------------------------------------- systems

def found_keys(song: Song) -> np.ndarray:
    """The key per beat that ``harmonize`` finds on the song's metric beats (``section_keys``)."""
    return section_keys(song.pitches, song.bar_start).astype(np.int64)


def harmonize_song(model: HarmonizerModel, song: Song, rng: np.random.Generator, strategy: str | None = None,
                   calls: int | None = None, temperature: float | None = None, top_p: float | None = None,
                   rhythm: str | None = None, ending: str = "tonic") -> tuple[np.ndarray, int]:
    """The model's chord per metric beat of ``song``: the one call of ``harmonize``, as
    ``scorebridge harmonize`` makes it (``clip.clip_grid``: a lead-sheet model steps on the metric
    beats, a quarter-note model on quarters with every 16th's pitch and the metre in quarters;
    the card's strategy, rhythm, temperature and top-p unless given, the tonic ending), with the
    song's bars and its style where the model has it (else the model's first). A beat's chord is
    the one at its first 16th."""
    if model.beats == "metric":
        pitches, bars, pick = song.pitches, song.bar_start, np.arange(song.beats)
    else:
        quarters = -(-len(song.melody) // 4)
        pad = quarters * 4 - len(song.melody)
        pitches = np.pad(song.melody, (0, pad), constant_values=-1).reshape(quarters, 4)
        bars, pick = np.pad(song.bar16, (0, pad)).reshape(quarters, 4).max(1), song.start // 4
    style = song.style if song.style in model.styles else model.default_style
    result = harmonize(model, pitches, bars, clip_grid(model, song.time_signature).time_signature, style=style,
                       strategy=strategy or model.strategy, calls=calls or model.calls, rng=rng,
                       temperature=model.temperature if temperature is None else temperature,
                       top_p=model.top_p if top_p is None else top_p, rhythm=rhythm or model.rhythm, ending=ending)
    return result.chords[pick], result.calls


@dataclass(frozen=True)
class ModelSpec:
    """A model row: the shipped name, its file and the decoding (None: the card's value)."""

    name: str
    path: str
    strategy: str | None = None
    calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    rhythm: str | None = None
    ending: str = "tonic"


@dataclass(frozen=True)
class DecodeJob:
    """The batch layer's job (``core.batch``): a worker loads every model once; an item is one
    song under one model, its draw seeded by (seed, the song's number), so the chords do not
    depend on which worker, process or Ray node decodes it."""

    specs: tuple[ModelSpec, ...]
    seed: int

    def settings(self) -> dict:
        return {"specs": [spec.__dict__ for spec in self.specs], "seed": self.seed}

    def setup(self, threads: int) -> dict[str, HarmonizerModel]:
        """Every model with one intra-op thread whatever the worker's share, as the continuation
        eval: one song's calls are too small to split."""
        return {path: HarmonizerModel.load(path) for path in {spec.path for spec in self.specs}}

    def process(self, models: dict[str, HarmonizerModel], item: Item) -> tuple[np.ndarray, int]:
        spec, number = self.specs[item.inputs["spec"]], item.inputs["number"]
        return harmonize_song(models[spec.path], item.inputs["song"], np.random.default_rng([self.seed, number]),
                              spec.strategy, spec.calls, spec.temperature, spec.top_p, spec.rhythm, spec.ending)


@dataclass
class Produced:
    """One system's chords per song (per metric beat), model calls per song and seconds spent."""

    chords: list[np.ndarray]
    calls: list[int]
    seconds: float


def decode_models(specs: Sequence[ModelSpec], songs: Sequence[Song], seed: int = 0, workers: int | None = 1,
                  progress: Callable[[str], None] = lambda text: None, ray_address: str | None = None
                  ) -> dict[str, Produced]:
    """Every model on every song through the batch layer: ``workers`` processes (1: this
    process; None: one per core) or a Ray cluster at ``ray_address``; seconds are each model's
    decoding time summed over its songs."""
    items = [Item(f"{spec.name}/{number}", (), {"spec": index, "number": number, "song": song})
             for index, spec in enumerate(specs) for number, song in enumerate(songs)]
    done = dict.fromkeys((spec.name for spec in specs), 0)

    def finished(result) -> None:
        name = result.item.rpartition("/")[0]
        done[name] += 1
        if done[name] % 20 == 0 or done[name] == len(songs):
            progress(f"lead sheets: {name} {done[name]}/{len(songs)} songs")

    results, where = gather(DecodeJob(tuple(specs), seed), items, workers, ray_address, finished)
    progress(f"lead sheets: {len(items)} model x song items on {where}")
    out = {}
    for index, spec in enumerate(specs):
        mine = results[index * len(songs): (index + 1) * len(songs)]
        out[spec.name] = Produced([r.value[0] for r in mine], [r.value[1] for r in mine],
                                  sum(r.seconds for r in mine))
    return out


def _triad(root: int | np.ndarray, quality: int | np.ndarray) -> np.ndarray:
    """Token of a triad (quality index 0 maj, 1 min, 3 dim; numbers or arrays)."""
    return NUM_SPECIALS + (np.asarray(root) % 12) * NUM_QUALITIES + np.asarray(quality, dtype=np.int64)


# Diatonic triads in order of preference for ties: (degree, quality index: 0 maj, 1 min, 3 dim);
# minor keys take the harmonic minor's major V
_DIATONIC = (((0, 0), (5, 0), (7, 0), (9, 1), (2, 1), (4, 1), (11, 3)),
             ((0, 1), (5, 1), (7, 0), (8, 0), (3, 0), (10, 0), (2, 3)))


def best_triad_chords(song: Song, keys: np.ndarray) -> np.ndarray:
    """Per bar, the diatonic triad of the bar's key (``keys`` per beat) that holds the most
    melody 16ths of the bar (ties to I IV V vi ii iii vii); a bar without melody keeps the chord
    before it."""
    bar_of_beat = np.maximum(np.cumsum(song.bar_start) - 1, 0)
    bar_key = keys[np.flatnonzero(np.r_[True, np.diff(bar_of_beat) > 0])]
    bar16 = np.repeat(bar_of_beat, np.diff(np.append(song.start, len(song.melody))))
    sounding = song.melody >= 0
    counts = np.zeros((len(bar_key), 12), dtype=np.int64)
    np.add.at(counts, (bar16[sounding], song.melody[sounding] % 12), 1)
    chosen = np.zeros(len(bar_key), dtype=np.int64)
    for code in np.unique(bar_key):
        triads = np.array([_triad(code + degree, quality) for degree, quality in _DIATONIC[int(code) // 12]])
        rows = bar_key == code
        chosen[rows] = triads[np.argmax(counts[rows] @ token_bitmaps()[triads].T.astype(np.int64), axis=1)]
    for bar in range(len(chosen)):
        if not counts[bar].any():
            chosen[bar] = chosen[bar - 1] if bar else _triad(bar_key[0], bar_key[0] >= 12)
    return chosen[bar_of_beat]


def baselines(songs: Sequence[Song], with_rule: bool = True) -> dict[str, Produced]:
    """The rows without a model: human, rule (optional), tonic and best-triad."""
    def tonic(song: Song) -> np.ndarray:
        keys = found_keys(song)
        return _triad(keys, keys >= 12)

    systems: list[tuple[str, Callable[[Song], np.ndarray]]] = [("human", lambda song: song.human)]
    if with_rule:
        systems.append(("rule", lambda song: rule_row(melody_roll(song.pitches, "pc"), np.full(song.beats, MASK))))
    systems += [("tonic", tonic), ("best-triad", lambda song: best_triad_chords(song, found_keys(song)))]
    out = {}
    for name, system in systems:
        started = time.perf_counter()
        chords = [system(song) for song in songs]
        out[name] = Produced(chords, [0] * len(songs), time.perf_counter() - started)
    return out


# ---------------------------------------------------------------- scoring

@dataclass
class _Frame:
    """What every system of one song is scored against."""

    lengths: np.ndarray  # 16ths per beat
    span: np.ndarray  # bool [B]: beats from the first to the last human chord
    counted: np.ndarray  # bool [N]: 16ths of beats with a human chord
    last_beat: int  # the beat of the melody's last sounding 16th
    last_pitch: int
    end_key: tuple[int, str]  # the annotated key there
    step: np.ndarray  # grid position -> beat, -1 at bar positions
    windows: list[tuple[int, int, np.ndarray, list]]  # (first, end position, top melody pitch, notes)


def _frame(song: Song) -> _Frame:
    lengths = np.diff(np.append(song.start, len(song.melody)))
    has_chord = np.flatnonzero(song.human >= NUM_SPECIALS)
    span = np.zeros(song.beats, dtype=bool)
    if len(has_chord):
        span[has_chord[0]: has_chord[-1] + 1] = True
    counted = np.repeat(song.human >= NUM_SPECIALS, lengths)
    sounding = np.flatnonzero(song.melody >= 0)
    last = int(sounding[-1]) if len(sounding) else 0
    sequence = build_sequence(WINDOW, song.pitches, song.onset, song.human, song.bar_start,
                              np.zeros((song.beats, 2), np.float32))
    row = np.where(sequence.step < 0, BAR, 0)
    windows = []
    for first in _window_starts(len(row), WINDOW.length, WINDOW.length, np.flatnonzero(sequence.step < 0)):
        end = min(len(row), first + WINDOW.length)
        pitch = sequence.melody_pitch[first:end]
        windows.append((first, end, pitch, window_melody(pitch, sequence.melody_onset[first:end], row[first:end])))
    last_beat = int(np.searchsorted(song.start, last, side="right") - 1)
    code = int(song.keys[last_beat])
    end_key = (code % 12, "minor" if code >= 12 else "major") if code >= 0 else (song.tonic, song.mode)
    return _Frame(lengths, span, counted, last_beat, int(song.melody[last]) if len(sounding) else -1, end_key,
                  sequence.step, windows)


def score_song(song: Song, frame: _Frame, chords: np.ndarray) -> dict[str, float]:
    """Every figure of ``chords`` (one per beat) on one song."""
    chords = np.asarray(chords, dtype=np.int64)
    row = np.where(frame.step < 0, BAR, chords[np.maximum(frame.step, 0)])
    windows = [window_scores(row[first:end], pitch, notes) for first, end, pitch, notes in frame.windows]
    scores = {
        "majmin": agreement(chords, song.human, "majmin"),
        "sevenths": agreement(chords, song.human, "sevenths"),
        "changes_per_bar": changes_per_bar(chords, song.bar_start, frame.span),
        "chord_tones": chord_tone_ratio(np.repeat(chords, frame.lengths), song.melody, frame.counted),
        "tonic_ending": ends_on_tonic(int(chords[frame.last_beat]), frame.last_pitch, *frame.end_key),
    }
    for name in ("PCS", "CTnCTR", "CHE", "CC"):
        values = [w[name] for w in windows if np.isfinite(w[name])]
        scores[name] = float(np.mean(values)) if values else float("nan")
    return scores


def _groups(songs: Sequence[Song]) -> dict[str, list[int]]:
    """Song indices of every group: all, each data set, each style (lead-sheet styles first)."""
    groups: dict[str, list[int]] = {"all": list(range(len(songs)))}
    for name in (*SETS, *STYLES[3:], *STYLES[:3]):
        members = [i for i, s in enumerate(songs) if name in (s.dataset, s.style)]
        if members:
            groups[name] = members
    return groups


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_songs(songs: Sequence[Song], produced: dict[str, Produced]) -> dict:
    """Every system's figures on every song; JSON-ready means per group (songs weigh the same),
    the changes per bar as a ratio to the human chords' on the same songs, and key detection."""
    if not songs:
        raise ValueError("no song to evaluate")
    frames = [_frame(song) for song in songs]
    groups = _groups(songs)
    results: dict[str, dict] = {}
    for name, made in produced.items():
        rows = [score_song(song, frame, chords) for song, frame, chords in zip(songs, frames, made.chords)]
        by_group = {}
        for group, members in groups.items():
            means = {metric: _mean([rows[i][metric] for i in members]) for metric in METRICS}
            means["tonic_songs"] = int(sum(np.isfinite(rows[i]["tonic_ending"]) for i in members))
            by_group[group] = means
        results[name] = {"groups": by_group, "mean_calls": float(np.mean(made.calls)), "seconds": made.seconds,
                         "songs": {song.piece_id: row for song, row in zip(songs, rows)}}
    human = results.get("human")
    for result in results.values():
        for group, means in result["groups"].items():
            reference = human["groups"][group]["changes_per_bar"] if human else float("nan")
            means["changes_ratio"] = means["changes_per_bar"] / reference if reference else float("nan")
    keys = {}
    shares = [key_shares(found_keys(song), song.keys) for song in songs]
    for group, members in groups.items():
        keys[group] = {name: _mean([shares[i][name] for i in members]) for name in KEY_RELATIONS}
    return {
        "groups": {group: {"songs": len(members), "beats": int(sum(songs[i].beats for i in members))}
                   for group, members in groups.items()},
        "systems": results,
        "key_detection": keys,
    }


# ---------------------------------------------------------------- tables

_OVERALL = (("majmin", "root+maj/min", "{:.3f}"), ("sevenths", "sevenths", "{:.3f}"),
            ("changes_per_bar", "changes/bar", "{:.2f}"), ("changes_ratio", "x human", "{:.2f}"),
            ("chord_tones", "chord tones", "{:.3f}"), ("tonic_ending", "tonic end", "{:.2f}"),
            ("PCS", "PCS", "{:.3f}"), ("CTnCTR", "CTnCTR", "{:.3f}"), ("CHE", "CHE", "{:.2f}"), ("CC", "CC", "{:.1f}"))
_BY_GROUP = (("majmin", "Root + major/minor agreement with the human chords (per beat)", "{:.3f}"),
             ("sevenths", "Sevenths agreement (per beat)", "{:.3f}"),
             ("changes_ratio", "Chord changes per bar, as a multiple of the human chords' (1.00 = the same)",
              "{:.2f}"),
             ("chord_tones", "Melody on chord tones (share of melody duration)", "{:.3f}"),
             ("tonic_ending", "Melody ending on the tonic: share ending on the tonic chord", "{:.2f}"))


def _cell(value: float, fmt: str) -> str:
    return fmt.format(value) if np.isfinite(value) else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def report_markdown(report: dict) -> str:
    """The tables of an ``evaluate_songs`` report (with ``title`` and ``protocol`` added)."""
    systems, groups = report["systems"], report["groups"]
    overall = [[name, *(_cell(result["groups"]["all"][key], fmt) for key, _, fmt in _OVERALL),
                f"{result['mean_calls']:.0f}", f"{result['seconds']:.1f}"] for name, result in systems.items()]
    parts = [f"**{report.get('title', 'Held-out lead sheets')}**: "
             + ", ".join(f"{group} {info['songs']} songs" for group, info in groups.items() if group in ("all", *SETS))
             + f". {report.get('protocol', '')}".rstrip(),
             "", _table(["system", *(label for _, label, _ in _OVERALL), "calls/song", "s"], overall)]
    header = ["system", *(f"{group} ({info['songs']})" for group, info in groups.items())]
    for key, title, fmt in _BY_GROUP:
        rows = [[name, *(_cell(result["groups"][group][key], fmt) for group in groups)]
                for name, result in systems.items()]
        if key == "tonic_ending":
            rows.append(["songs ending on the tonic", *(str(next(iter(systems.values()))["groups"][g]["tonic_songs"])
                                                          for g in groups)])
        parts += ["", f"*{title}*", "", _table(header, rows)]
    keys = [[relation, *(f"{report['key_detection'][group][relation]:.2f}" for group in groups)]
            for relation in KEY_RELATIONS]
    parts += ["", "*Key found on the melody per section (as harmonize finds it) against the annotated local key: "
              "share of beats*", "",
              _table(["key found", *header[1:]], keys)]
    return "\n".join(parts)
