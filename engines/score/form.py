"""The form of a score on the picture's time line: which cuts are large, the tempo map, the sections.

A cut is *large* when the valence-arousal curve moves across it (the distance between its means
over the ``CONTRAST_WINDOW_S`` before and after is at least ``MIN_CONTRAST``), and it lies at
least ``MIN_SECTION_S`` from the start, the end and every larger cut kept before it.

Tempo ``auto`` is a tempo map, as a composer builds a click track to hit the cut: each section
(large cut to large cut) gets a whole number of beats and its own tempo, so every large cut falls
exactly on a beat, and a section starts on a bar line: when its beats are not whole bars, its last
bar is a short one (a 2/4 or 3/4 bar in 4/4, written as a metre change), as film cues do. The
tempo of section ``i`` aims at ``base * 2 ** (TEMPO_DEPTH * a_i)`` (``a_i`` its mean arousal);
the base is searched over ``BASE_RANGE`` (above it, up to the tempo limit, only when the theme
does not fit otherwise) for the map that strays least from those aims, from a
prior tempo set by the mean arousal and from one section to the next, a short bar costing as
much as ``SHORT_BAR_COST`` (about 2 %) of tempo. A given tempo stays constant: sections then
start on the beat nearest each cut, after a short bar when needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from engines.va import VACurve, beats_to_seconds

__all__ = ["Plan", "Section", "large_cuts", "plan_form"]

MIN_SECTION_S = 4.0
CONTRAST_WINDOW_S = 2.0
MIN_CONTRAST = 0.12
TEMPO_DEPTH = 0.15  # as ``va apply --tempo-depth``: +-11 % at arousal +-1
BASE_RANGE = (60.0, 150.0)
TEMPO_LIMITS = (40.0, 200.0)
SHORT_BAR_COST = 0.03  # in octaves of tempo (log2), like the other costs


@dataclass(frozen=True)
class Section:
    """A stretch of the score between two large cuts (or the ends)."""

    index: int
    start_s: float
    end_s: float
    start_beats: float
    beats: int  # quarters; the last bar is short when they are not whole bars
    bpm: float
    valence: float
    arousal: float


@dataclass(frozen=True)
class Plan:
    """The form: sections, the tempo map ``(start beats, BPM)``, bar length in quarters."""

    sections: tuple[Section, ...]
    tempo_map: tuple[tuple[float, float], ...]
    beats_per_bar: float
    duration_s: float
    cuts_s: tuple[float, ...]  # the large cuts the sections start at

    @property
    def total_beats(self) -> float:
        last = self.sections[-1]
        return last.start_beats + last.beats

    def end_beats(self, section: Section) -> float:
        return section.start_beats + section.beats

    def short_bars(self) -> list[tuple[float, float]]:
        """(start, length) in quarters of each section's short last bar."""
        found = []
        for section in self.sections:
            rest = section.beats % self.beats_per_bar
            if rest > 1e-9:
                found.append((section.start_beats + section.beats - rest, rest))
        return found

    def seconds(self, beats: float | np.ndarray) -> np.ndarray:
        """Video time of song positions in quarters."""
        return beats_to_seconds(beats, list(self.tempo_map))

    def section_at(self, beats: float) -> Section:
        for section in reversed(self.sections):
            if beats >= section.start_beats - 1e-9:
                return section
        return self.sections[0]


def large_cuts(curve: VACurve, cuts_s: list[float], duration_s: float) -> list[float]:
    """The cuts a section should start at (see the module docstring), in time order."""
    scored = []
    for cut in cuts_s:
        if cut < MIN_SECTION_S or duration_s - cut < MIN_SECTION_S:
            continue
        before, after = curve.mean_between(np.array([cut - CONTRAST_WINDOW_S, cut]),
                                           np.array([cut, cut + CONTRAST_WINDOW_S]))
        scored.append((float(np.linalg.norm(after - before)), float(cut)))
    kept: list[float] = []
    for contrast, cut in sorted(scored, reverse=True):
        if contrast >= MIN_CONTRAST and all(abs(cut - other) >= MIN_SECTION_S for other in kept):
            kept.append(cut)
    return sorted(kept)


def _auto_tempi(lengths_s: np.ndarray, arousal: np.ndarray, beats_per_bar: float,
                min_beats: float) -> tuple[np.ndarray, np.ndarray]:
    """(beats, BPM) per section for the best base tempo (module docstring)."""
    prior = 96.0 * 2 ** (0.3 * float(np.average(arousal, weights=lengths_s)))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    bases = np.arange(BASE_RANGE[0], BASE_RANGE[1] + 0.25, 0.5)
    # a theme too long for the usual bases is played faster, up to the tempo limit (as ``--tempo`` may)
    faster = np.arange(BASE_RANGE[1] + 0.5, TEMPO_LIMITS[1] * 2 ** TEMPO_DEPTH + 0.25, 0.5)
    for base in (*bases, *(faster if min_beats > 0 else ())):
        if best is not None and base > BASE_RANGE[1]:
            break
        aims = base * 2 ** (TEMPO_DEPTH * arousal)
        beats = np.maximum(1, np.rint(lengths_s * aims / 60))
        whole = np.maximum(1, np.rint(beats / beats_per_bar)) * beats_per_bar
        # a whole number of bars when it strays less than a short bar costs
        keep_whole = np.abs(np.log2(whole / (lengths_s * aims / 60))) <= \
            np.abs(np.log2(beats / (lengths_s * aims / 60))) + SHORT_BAR_COST
        beats = np.where(keep_whole, whole, beats)
        tempi = beats * 60 / lengths_s
        if tempi.min() < TEMPO_LIMITS[0] or tempi.max() > TEMPO_LIMITS[1] or beats.sum() < min_beats:
            continue
        stray = float(np.sum(lengths_s * np.abs(np.log2(tempi / aims))) / lengths_s.sum())
        jumps = float(np.mean(np.abs(np.diff(np.log2(tempi))))) if len(tempi) > 1 else 0.0
        short = SHORT_BAR_COST * float(np.mean(~keep_whole))
        cost = stray + 0.25 * abs(math.log2(base / prior)) + 0.25 * jumps + short
        if best is None or cost < best[0]:
            best = (cost, beats, tempi)
    if best is None:
        raise ConfigError(f"no tempo between {TEMPO_LIMITS[0]:g} and {TEMPO_LIMITS[1]:g} BPM fits the theme "
                          f"({min_beats:g} quarters) and the sections; give --tempo BPM or a shorter theme")
    return best[1].astype(int), best[2]


def _midi_exact(bpm: float) -> float:
    """The BPM a MIDI file stores (whole microseconds per quarter), so that seconds computed from
    the plan and from the written file agree."""
    return 60e6 / round(60e6 / bpm)


def plan_form(curve: VACurve, cuts_s: list[float], duration_s: float, tempo: float | None = None,
              beats_per_bar: float = 4.0, min_beats: float = 0.0) -> Plan:
    """Sections at the large cuts and the tempo map; ``tempo`` None = auto. ``min_beats``: the
    music must last at least this many quarters (the theme)."""
    if not duration_s > 0:
        raise ConfigError(f"the video lasts {duration_s} s: nothing to score")
    chosen = large_cuts(curve, cuts_s, duration_s)
    edges = np.array([0.0, *chosen, duration_s])
    means = curve.mean_between(edges[:-1], edges[1:])
    lengths = np.diff(edges)
    if tempo is None:
        beats, tempi = _auto_tempi(lengths, means[:, 1], beats_per_bar, min_beats)
    else:
        if min_beats > duration_s * tempo / 60 + 1e-9:
            raise ConfigError(f"the theme lasts {min_beats:g} quarters, {min_beats * 60 / tempo:.1f} s at "
                              f"{tempo:g} BPM: longer than the video ({duration_s:.1f} s)")
        beat_s = 60 / tempo
        total = max(1, math.ceil(duration_s / beat_s - 1e-6))
        starts = sorted({0, *(min(total - 1, max(1, round(cut / beat_s))) for cut in chosen)})
        beats = np.diff([*starts, total]).astype(int)
        edges = np.array([*(np.array(starts) * beat_s), duration_s])
        means = curve.mean_between(edges[:-1], np.maximum(edges[1:], edges[:-1]))
        tempi = np.full(len(beats), float(tempo))
        chosen = [float(s) for s in edges[1:-1]]
    starts = np.concatenate([[0], np.cumsum(beats)[:-1]])
    sections = tuple(Section(i, float(edges[i]), float(edges[i + 1]), float(starts[i]), int(beats[i]),
                             _midi_exact(float(tempi[i])), float(means[i, 0]), float(means[i, 1]))
                     for i in range(len(beats)))
    tempo_map = tuple((s.start_beats, s.bpm) for s in sections
                      if s.index == 0 or s.bpm != sections[s.index - 1].bpm)
    return Plan(sections, tempo_map, beats_per_bar, duration_s, tuple(chosen))
