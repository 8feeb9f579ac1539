"""Lead sheets with human chord symbols on the harmonizer's 16th grid (numpy; music21 / mido /
sqlite3 only while a song is parsed): OpenEWLD (MusicXML) and POP909 (``pop909.py``).

Training builds the full cache ``leadsheets_q16_v1.npz`` (``python -m training.harmonizer.leadsheets
build``). ``scorebridge eval harmony`` needs only the held-out songs of the committed split lists
(``splits/{openewld,pop909}_{test,val}.txt``): ``load_eval_songs`` takes them from the full cache
when it is in the cache folder, else parses them from the data sets once and keeps them in
``leadsheets_{split}_q16_v1.npz`` beside it. The data sets are read from ``--datasets`` (default
``$SCOREBRIDGE_DATASETS``, else ``../shared/datasets`` beside the repository root):
``openewld/`` and ``pop909/POP909/``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from core.keys import key_correlations

from .affect import normalizing_shift, valence_arousal
from .chord_symbols import QUALITY_SETS, ChordEvent, SymbolMapper, music21_chord
from .dataset import DEFAULT_CACHE
from .dataset import STYLES as CLASSICAL_STYLES
from .vocab import NC, NUM_QUALITIES, NUM_SPECIALS, token_bitmaps

__all__ = [
    "STYLES",
    "GENRE_STYLE",
    "SETS",
    "CACHE_FILE",
    "EVAL_CACHE_FILE",
    "EVAL_SPLITS",
    "SPLITS_DIR",
    "DATASETS_ENV",
    "LeadSheet",
    "default_datasets",
    "paint_chords",
    "transpose_sheet",
    "key_code",
    "parse_openewld_score",
    "openewld_sources",
    "sheets_to_arrays",
    "take_songs",
    "load",
    "split_ids",
    "load_eval_songs",
]

# The shipped model's three styles keep their ids (its card lists them); lead-sheet styles follow.
STYLES: tuple[str, ...] = (*CLASSICAL_STYLES, "pop", "rock", "jazz", "stage", "folk")
# OpenEWLD's one genre per work (discogs) -> style. The rare genres go to the nearest of the five;
# "Classical" (Fuer Elise, Liebestraum ... as lead sheets) to the existing classical style.
GENRE_STYLE = {
    "Pop": "pop",
    "Rock": "rock",
    "Jazz": "jazz",
    "Stage & Screen": "stage",
    "Folk, World, & Country": "folk",
    "Funk / Soul": "pop",
    "Electronic": "pop",
    "Reggae": "pop",
    "Non-Music": "pop",
    "Blues": "jazz",
    "Latin": "jazz",
    "Brass & Military": "folk",
    "Classical": "classical",
}
UNLABELLED_STYLE = "folk"  # works without a genre in the database: mostly 19th-century songs
SETS = ("openewld", "pop909")
CACHE_FILE = "leadsheets_q16_v1.npz"
EVAL_CACHE_FILE = "leadsheets_{split}_q16_v1.npz"  # the songs of one held-out list
EVAL_SPLITS = ("test", "val")
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DATASETS_ENV = "SCOREBRIDGE_DATASETS"
STEPS_PER_QUARTER = 4
MAX_STEPS = 16_000
PIECE_FIELDS = ("piece_id", "dataset", "style", "time_signature", "shift", "mode", "tonic", "split")
STEP_FIELDS = (
    "melody_pitch", "melody_onset", "texture", "voices", "struck", "bass", "chord",
    "chord_onset", "bar_start", "beat_start", "key", "va",
)


def default_datasets() -> Path:
    """``$SCOREBRIDGE_DATASETS``, else ``../shared/datasets`` next to the repository root."""
    override = os.environ.get(DATASETS_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


# ---------------------------------------------------------------- one song on the 16th grid

@dataclass
class LeadSheet:
    """One song on the 16th grid, transposed to C major / A minor by its annotated key."""

    piece_id: str
    dataset: str
    style: int
    melody_pitch: np.ndarray  # int16 [N], -1 rest
    melody_onset: np.ndarray  # uint8 [N]
    chord: np.ndarray  # int16 [N], human chord token, NC where none
    bass: np.ndarray  # int8 [N], the chord's bass pitch class (slash bass or root), -1 none
    chord_onset: np.ndarray  # uint8 [N], 1 where a chord symbol starts (also a repeated one)
    bar_start: np.ndarray  # uint8 [N]
    beat_start: np.ndarray  # uint8 [N], metric beats: dotted quarters in x/8, halves in x/2
    key: np.ndarray  # int8 [N], local key after transposition: tonic pc, +12 for minor; -1 unknown
    time_signature: tuple[int, int]
    shift: int
    mode: str
    tonic: int  # annotated tonic before transposition

    def __len__(self) -> int:
        return len(self.chord)


def paint_chords(events: list[ChordEvent], steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chord = np.full(steps, NC, dtype=np.int16)
    bass = np.full(steps, -1, dtype=np.int8)
    onset = np.zeros(steps, dtype=np.uint8)
    events = sorted(events, key=lambda e: e.step)
    for index, event in enumerate(events):
        start = max(0, event.step)
        end = events[index + 1].step if index + 1 < len(events) else steps
        if start >= min(end, steps):
            continue
        chord[start:end] = event.token
        bass[start:end] = event.bass
        onset[start] = event.token != NC
    return chord, bass, onset


def transpose_sheet(sheet: LeadSheet, shift: int) -> None:
    sheet.shift = shift
    sheet.melody_pitch = np.where(sheet.melody_pitch >= 0, sheet.melody_pitch + shift, -1).astype(np.int16)
    chords = sheet.chord.astype(np.int64)
    inside = chords >= NUM_SPECIALS
    root, quality = np.divmod(chords - NUM_SPECIALS, NUM_QUALITIES)
    sheet.chord = np.where(inside, NUM_SPECIALS + ((root + shift) % 12) * NUM_QUALITIES + quality, chords).astype(
        np.int16)
    sheet.bass = np.where(sheet.bass >= 0, (sheet.bass.astype(np.int64) + shift) % 12, -1).astype(np.int8)
    key = sheet.key.astype(np.int64)
    sheet.key = np.where(key >= 0, (key % 12 + shift) % 12 + 12 * (key >= 12), -1).astype(np.int8)


def key_code(tonic: int, mode: str) -> int:
    return tonic % 12 + (12 if mode == "minor" else 0)


def _section_key(major_tonic: int, stated: str | None, melody: np.ndarray, chords: np.ndarray) -> tuple[int, str]:
    """Major key of a signature or its relative minor: a stated minor mode wins; otherwise the
    Krumhansl-Kessler correlation of the melody and chord tones, with the last chord as a vote."""
    minor_tonic = (major_tonic + 9) % 12
    if stated == "minor":
        return minor_tonic, "minor"
    histogram = np.bincount(melody[melody >= 0] % 12, minlength=12).astype(np.float64)
    tones = token_bitmaps()[chords.astype(np.int64)].sum(0).astype(np.float64)
    correlations = key_correlations(histogram + 0.5 * tones)
    major, minor = correlations[major_tonic], correlations[12 + minor_tonic]
    sounding = chords[chords >= NUM_SPECIALS].astype(np.int64)
    if len(sounding):
        root, quality = divmod(int(sounding[-1]) - NUM_SPECIALS, NUM_QUALITIES)
        third = 3 in QUALITY_SETS[quality]
        major += 0.2 * (root == major_tonic and not third)
        minor += 0.2 * (root == minor_tonic and third)
    return (minor_tonic, "minor") if minor > major else (major_tonic, "major")


def parse_openewld_score(score, piece_id: str, style: int, mapper: SymbolMapper) -> LeadSheet:
    """A music21 lead sheet -> LeadSheet (melody = top note of the part that has the chord symbols)."""
    from music21 import harmony, meter
    from music21 import key as m21key

    parts = list(score.parts) or [score]
    part = max(parts, key=lambda p: len(p.recurse().getElementsByClass(harmony.ChordSymbol)))
    flat = part.flatten()
    notes = [n for n in flat.notes if not isinstance(n, harmony.ChordSymbol) and float(n.quarterLength) > 0]
    symbols = list(flat.getElementsByClass(harmony.ChordSymbol))
    if not notes:
        raise ValueError(f"{piece_id}: no melody notes")
    if not symbols:
        raise ValueError(f"{piece_id}: no chord symbols")
    total = max(float(flat.highestTime), max(float(n.offset + n.quarterLength) for n in notes))
    steps = min(MAX_STEPS, int(math.ceil(total * STEPS_PER_QUARTER)))

    def step(quarters: float) -> int:
        return int(round(float(quarters) * STEPS_PER_QUARTER))

    melody_pitch = np.full(steps, -1, dtype=np.int16)
    melody_onset = np.zeros(steps, dtype=np.uint8)
    for note in notes:
        start = step(note.offset)
        end = min(steps, max(step(note.offset + note.quarterLength), start + 1))
        if start >= steps:
            continue
        melody_pitch[start:end] = np.maximum(melody_pitch[start:end], max(p.midi for p in note.pitches))
        tied = note.tie is not None and note.tie.type in ("stop", "continue")
        if not tied:
            melody_onset[start] = 1
    events = [ChordEvent(step(s.offset), *music21_chord(s, mapper)) for s in symbols]
    chord, bass, chord_onset = paint_chords(events, steps)

    bar_start = np.zeros(steps, dtype=np.uint8)
    beat_start = np.zeros(steps, dtype=np.uint8)
    signature: meter.TimeSignature | None = None
    first_signature: tuple[int, int] | None = None
    measures = list(part.getElementsByClass("Measure"))
    for number, measure in enumerate(measures):
        if measure.timeSignature is not None:
            signature = measure.timeSignature
            first_signature = first_signature or (int(signature.numerator), int(signature.denominator))
        active = signature or meter.TimeSignature("4/4")
        offset, length = float(measure.offset), float(measure.duration.quarterLength)
        beat = float(active.beatDuration.quarterLength)
        bar = float(active.barDuration.quarterLength)
        if step(offset) < steps:
            bar_start[step(offset)] = 1
        # a short first measure is a pickup: its beats count back from the bar line
        phase = (length % beat) if number == 0 and length < bar - 1e-6 else 0.0
        position = offset + phase
        while position < offset + length - 1e-6:
            if step(position) < steps:
                beat_start[step(position)] = 1
            position += beat
    bar_start[0] = 1
    if not beat_start.any():
        beat_start[::STEPS_PER_QUARTER] = 1

    # Key signatures give the tonic up to major/relative minor (OpenEWLD's database reads every
    # one as major); each signature's section picks its mode from the melody and chords.
    signatures = [(max(0, step(k.offset)), int(k.sharps), getattr(k, "mode", None))
                  for k in flat.getElementsByClass(m21key.KeySignature)]
    if not signatures or signatures[0][0] > 0:
        signatures.insert(0, (0, signatures[0][1] if signatures else 0, None))
    key_codes = np.full(steps, -1, dtype=np.int8)
    sections = []
    for index, (start, sharps, stated) in enumerate(signatures):
        end = signatures[index + 1][0] if index + 1 < len(signatures) else steps
        if end <= start:
            continue
        major_tonic = (7 * sharps) % 12
        tonic, mode = _section_key(major_tonic, stated, melody_pitch[start:end], chord[start:end])
        key_codes[start:end] = key_code(tonic, mode)
        sections.append((tonic, mode))
    tonic, mode = sections[0]
    sheet = LeadSheet(piece_id, "openewld", style, melody_pitch, melody_onset, chord, bass, chord_onset,
                      bar_start, beat_start, key_codes, first_signature or (4, 4), 0, mode, tonic)
    transpose_sheet(sheet, normalizing_shift(tonic, mode))
    return sheet


# ---------------------------------------------------------------- sources, arrays, caches

def openewld_sources(root: Path) -> list[tuple[str, Path, int]]:
    """(piece id, .mxl path, style id) per distinct lead sheet, in path order."""
    database = root / "OpenEWLD.db"
    if not database.is_file():
        raise FileNotFoundError(f"{database} missing (OpenEWLD's SQLite database)")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT w.path_leadsheet, g.genre, g.occurrences FROM works w LEFT JOIN work_genres g ON g.id = w.id"
        ).fetchall()
    finally:
        connection.close()
    genres: dict[str, Counter] = {}
    for path, genre, occurrences in rows:
        genres.setdefault(path, Counter())
        if genre:
            genres[path][genre] += occurrences or 1
    sources = []
    for path in sorted(genres):
        file = root / path
        if not file.is_file():
            continue
        genre = genres[path].most_common(1)[0][0] if genres[path] else None
        style = GENRE_STYLE.get(genre, UNLABELLED_STYLE) if genre else UNLABELLED_STYLE
        piece_id = "openewld/" + path.removeprefix("dataset/")
        sources.append((piece_id, file, STYLES.index(style)))
    return sources


def sheets_to_arrays(sheets: Sequence[LeadSheet], splits: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The raw-cache layout of ``training.harmonizer.data`` plus the lead-sheet fields; ``splits``
    gives each piece id's split.

    ``texture``/``voices`` hold the human chord's pitch classes with its bass and ``struck`` them
    at chord onsets, so code written for the classical cache can read these pieces too.
    """
    lengths = np.array([len(s) for s in sheets], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {
        "piece_id": np.array([s.piece_id for s in sheets]),
        "dataset": np.array([s.dataset for s in sheets]),
        "style": np.array([s.style for s in sheets], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "time_signature": np.array([s.time_signature for s in sheets], dtype=np.int64).reshape(-1, 2),
        "shift": np.array([s.shift for s in sheets], dtype=np.int64),
        "mode": np.array([s.mode for s in sheets]),
        "tonic": np.array([s.tonic for s in sheets], dtype=np.int64),
        "split": np.array([splits[s.piece_id] for s in sheets]),
        "styles": np.array(STYLES),
    }
    per_step: dict[str, list[np.ndarray]] = {name: [] for name in STEP_FIELDS}
    bitmaps = token_bitmaps().astype(np.uint8)
    for sheet in sheets:
        texture = bitmaps[sheet.chord.astype(np.int64)]
        has_bass = sheet.bass >= 0
        texture[np.flatnonzero(has_bass), sheet.bass[has_bass]] = 1
        struck = texture * sheet.chord_onset[:, None]
        va = valence_arousal(sheet.melody_pitch, sheet.melody_onset, texture, np.zeros(len(sheet)), STEPS_PER_QUARTER)
        values = {
            "melody_pitch": sheet.melody_pitch, "melody_onset": sheet.melody_onset, "texture": texture,
            "voices": texture.copy(), "struck": struck, "bass": sheet.bass, "chord": sheet.chord,
            "chord_onset": sheet.chord_onset, "bar_start": sheet.bar_start, "beat_start": sheet.beat_start,
            "key": sheet.key, "va": va,
        }
        for name in STEP_FIELDS:
            per_step[name].append(values[name])
    for name in STEP_FIELDS:
        arrays[name] = np.concatenate(per_step[name]) if sheets else np.zeros(0)
    return arrays


def take_songs(arrays: Mapping[str, np.ndarray], indices: Sequence[int]) -> dict[str, np.ndarray]:
    """The songs at ``indices`` (in that order) of cache arrays; fields of the whole cache kept."""
    indices = np.asarray(indices, dtype=np.int64)
    offsets = arrays["offsets"]
    lengths = offsets[indices + 1] - offsets[indices]
    steps = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices] or [np.zeros(0, np.int64)])
    out = {}
    for key, value in arrays.items():
        if key == "offsets":
            out[key] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        else:
            out[key] = value[indices] if key in PIECE_FIELDS else value[steps] if key in STEP_FIELDS else value
    return out


def _read(path: Path, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A cache file; of the per-16th fields only ``fields`` (all when None)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files if fields is None or key in fields or key not in STEP_FIELDS}


def load(cache: Path = DEFAULT_CACHE, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The full training cache (of the per-16th fields only ``fields``, all when None)."""
    path = Path(cache) / CACHE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; run `python -m training.harmonizer.leadsheets build`")
    return _read(path, fields)


def split_ids(dataset: str, split: str, splits_dir: Path = SPLITS_DIR) -> list[str]:
    """Piece ids of a committed split list (``splits/{dataset}_{split}.txt``), in its order."""
    path = Path(splits_dir) / f"{dataset}_{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; run `python -m training.harmonizer.leadsheets build`")
    return [line for line in path.read_text().splitlines() if line]


def load_eval_songs(
    split: str,
    cache: Path = DEFAULT_CACHE,
    datasets: Path | None = None,
    progress: Callable[[str], None] | None = None,
    fields: Sequence[str] | None = None,
    splits_dir: Path = SPLITS_DIR,
) -> dict[str, np.ndarray]:
    """The songs of the committed ``split`` lists (test or val; OpenEWLD, then POP909, list order).

    From the full training cache when ``cache`` holds one with every listed song, else from
    ``EVAL_CACHE_FILE`` there, parsed from ``datasets`` on first use (progress on stderr) and
    rebuilt when the lists change. Nothing outside the lists is read into the result.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    wanted = [piece for dataset in SETS for piece in split_ids(dataset, split, splits_dir)]
    cache = Path(cache)
    if (cache / CACHE_FILE).is_file():
        arrays = _read(cache / CACHE_FILE, fields)
        index = {str(piece): number for number, piece in enumerate(arrays["piece_id"])}
        if all(piece in index for piece in wanted):
            return take_songs(arrays, [index[piece] for piece in wanted])
    path = cache / EVAL_CACHE_FILE.format(split=split)
    if path.is_file():
        arrays = _read(path, fields)
        if [str(piece) for piece in arrays.get("requested", [])] == wanted:
            return arrays
    arrays = _parse_songs(wanted, split, Path(datasets) if datasets is not None else default_datasets(), progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    if progress is not None:
        progress(f"cached {len(arrays['piece_id'])} {split} songs in {path}")
    return arrays


def _parse_songs(wanted: list[str], split: str, datasets: Path,
                 progress: Callable[[str], None] | None) -> dict[str, np.ndarray]:
    """Parse the listed songs from the data sets (a song that fails is listed in ``skipped``)."""
    from music21 import converter

    from .pop909 import read_pop909_song

    if not datasets.is_dir():
        raise FileNotFoundError(f"datasets folder {datasets} not found; give --datasets or ${DATASETS_ENV}")
    pop_root = datasets / "pop909" / "POP909"
    if any(p.startswith("pop909/") for p in wanted) and not pop_root.is_dir():
        raise FileNotFoundError(f"{pop_root} missing (POP909's song folders)")
    sources = {}
    if any(p.startswith("openewld/") for p in wanted):
        sources = {piece: (file, style) for piece, file, style in openewld_sources(datasets / "openewld")}
    mapper = SymbolMapper()
    sheets, skipped = [], []
    started = time.time()
    for number, piece_id in enumerate(wanted, 1):
        try:
            if piece_id.startswith("openewld/"):
                if piece_id not in sources:
                    raise ValueError("not in OpenEWLD's database or its file is missing")
                file, style = sources[piece_id]
                sheets.append(parse_openewld_score(converter.parse(file, forceSource=True), piece_id, style, mapper))
            else:
                sheets.append(read_pop909_song(pop_root / piece_id.partition("/")[2], mapper))
        except Exception as error:  # noqa: BLE001 - one bad song must not stop the build; each is listed
            skipped.append(f"{piece_id}: {type(error).__name__}: {error}")
        if progress is not None and (number % 10 == 0 or number == len(wanted)):
            progress(f"parsing {split} lead sheets: {number}/{len(wanted)}, {len(skipped)} skipped, "
                     f"{time.time() - started:.0f} s")
    if not sheets:
        raise ValueError(f"no {split} song could be read from {datasets}: " + "; ".join(skipped[:3]))
    arrays = sheets_to_arrays(sheets, dict.fromkeys((s.piece_id for s in sheets), split))
    arrays["requested"] = np.array(wanted)
    arrays["skipped"] = np.array(skipped, dtype=str)
    return arrays
