"""Lead-sheet training data for the harmonizer: OpenEWLD (MusicXML) and POP909 (MIDI + annotations).

    python -m training.harmonizer.leadsheets build [--datasets DIR] [--cache DIR] [--sets ...] [--limit N]
    python -m training.harmonizer.leadsheets stats [--cache DIR] [--json]

``build`` converts every song to the harmonizer's 16th grid with the runtime's readers
(``engines.harmonizer.leadsheet_corpus`` and ``pop909``: the raw-cache layout of
``training.harmonizer.data`` plus the human chord labels, metric beats and local keys), assigns
the seeded split, writes ``leadsheets_q16_v1.npz`` and ``leadsheets_report.json`` (chord-symbol
coverage) under the cache folder (``core.paths.cache_dir("harmonizer")``), rewrites the
committed split lists in ``engines/harmonizer/splits/`` (``scorebridge eval harmony`` reads the
test and val lists) and prints the statistics. Progress goes to stderr.

The data sets are read from ``--datasets`` (default ``$SCOREBRIDGE_DATASETS``, else
``../shared/datasets`` beside the repository root): ``openewld/`` and ``pop909/POP909/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from core.atomic import atomic_output
from engines.harmonizer.chord_symbols import SymbolMapper
from engines.harmonizer.dataset import DEFAULT_CACHE
from engines.harmonizer.leadsheet_corpus import (
    CACHE_FILE,
    DATASETS_ENV,
    SETS,
    SPLITS_DIR,
    STYLES,
    default_datasets,
    load,
    openewld_sources,
    parse_openewld_score,
    sheets_to_arrays,
)
from engines.harmonizer.pop909 import read_pop909_song
from engines.harmonizer.vocab import NC

__all__ = [
    "REPORT_FILE",
    "song_group",
    "assign_splits",
    "build",
    "statistics",
    "main",
]

REPORT_FILE = "leadsheets_report.json"
SPLIT_SEED = "scorebridge-leadsheets-v1"
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def song_group(piece_id: str) -> str:
    """Copies of one song (same title folder, any arranger) share a group and a split."""
    if piece_id.startswith("openewld/"):
        title = piece_id.rsplit("/", 2)[-2]
        return "openewld:" + re.sub(r"[^a-z0-9]+", "", re.sub(r"_\(.*?\)|\{.*?\}", "", title.lower()))
    return piece_id


def assign_splits(piece_ids: list[str], styles: list[int], seed: str = SPLIT_SEED) -> dict[str, str]:
    """Seeded 80/10/10 split by song, per data set and style: songs sorted by a seeded hash, the
    first tenth to test and the next to validation (at least one each from three songs on)."""
    group_style: dict[str, tuple[str, int]] = {}
    for piece_id, style in zip(piece_ids, styles):
        group_style.setdefault(song_group(piece_id), (piece_id.split("/", 1)[0], style))
    by_style: dict[tuple[str, int], list[str]] = {}
    for group, stratum in group_style.items():
        by_style.setdefault(stratum, []).append(group)
    split_of_group = {}
    for groups in by_style.values():
        groups.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        held = max(1, round(len(groups) / 10)) if len(groups) >= 3 else 0
        for index, group in enumerate(groups):
            split_of_group[group] = "test" if index < held else "val" if index < 2 * held else "train"
    return {piece_id: split_of_group[song_group(piece_id)] for piece_id in piece_ids}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(datasets: Path, cache: Path, sets: tuple[str, ...] = SETS, limit: int | None = None,
          splits_dir: Path = SPLITS_DIR) -> tuple[dict[str, np.ndarray], dict]:
    """Parse the chosen sets, write the cache, the coverage report and the split lists."""
    from music21 import converter

    jobs: list[tuple[str, object]] = []
    if "openewld" in sets:
        jobs.extend(("openewld", source) for source in openewld_sources(datasets / "openewld")[:limit])
    if "pop909" in sets:
        root = datasets / "pop909" / "POP909"
        if not root.is_dir():
            raise FileNotFoundError(f"{root} missing (POP909's song folders)")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())[:limit]
        jobs.extend(("pop909", folder) for folder in folders)
    mappers = {name: SymbolMapper() for name in SETS}
    sheets, skipped = [], []
    started = time.time()
    for index, (dataset, job) in enumerate(jobs):
        try:
            if dataset == "openewld":
                piece_id, path, style = job
                score = converter.parse(path, forceSource=True)
                sheets.append(parse_openewld_score(score, piece_id, style, mappers[dataset]))
            else:
                sheets.append(read_pop909_song(job, mappers[dataset]))
        except Exception as error:  # noqa: BLE001 - one bad song must not stop a build; each is listed
            skipped.append(f"{dataset} {job if dataset == 'pop909' else job[0]}: {type(error).__name__}: {error}")
        if (index + 1) % 50 == 0 or index + 1 == len(jobs):
            _progress(f"[{index + 1}/{len(jobs)}] kept {len(sheets)} skipped {len(skipped)} "
                      f"{time.time() - started:.0f}s")
    if not sheets:
        raise ValueError("no song could be read; see the skipped list: " + "; ".join(skipped[:5]))
    arrays = sheets_to_arrays(sheets, assign_splits([s.piece_id for s in sheets], [s.style for s in sheets]))
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache / CACHE_FILE) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    report = {
        name: {
            "symbols": mapper.symbols,
            "outcomes": dict(mapper.outcomes.most_common()),
            "out_of_vocabulary": sum(mapper.out_of_vocabulary.values()),
            "out_of_vocabulary_kinds": dict(mapper.out_of_vocabulary.most_common()),
        }
        for name, mapper in mappers.items() if name in sets
    }
    report["skipped"] = skipped
    (cache / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    if limit is None:
        splits_dir.mkdir(parents=True, exist_ok=True)
        for dataset in sets:
            for split in ("train", "val", "test"):
                ids = [str(p) for p, d, s in zip(arrays["piece_id"], arrays["dataset"], arrays["split"])
                       if d == dataset and s == split]
                (splits_dir / f"{dataset}_{split}.txt").write_text("\n".join(ids) + "\n")
    _progress(f"wrote {cache / CACHE_FILE}: {len(sheets)} songs, {len(skipped)} skipped")
    return arrays, report


# ---------------------------------------------------------------- statistics

def _changes(chord: np.ndarray) -> int:
    """Chord changes: a chord token unlike the previous chord (no-chord gaps are skipped)."""
    chords = chord[chord != NC]
    return int((chords[1:] != chords[:-1]).sum()) if len(chords) else 0


def statistics(arrays: dict[str, np.ndarray]) -> dict:
    """Songs, bars, beats, chords, changes per bar per (set, style); keys and metres per set."""
    styles = [str(s) for s in arrays.get("styles", STYLES)]
    out: dict = {}
    offsets = arrays["offsets"]
    for index in range(len(arrays["piece_id"])):
        dataset, style = str(arrays["dataset"][index]), styles[int(arrays["style"][index])]
        lo, hi = offsets[index], offsets[index + 1]
        chord, onset = arrays["chord"][lo:hi], arrays["chord_onset"][lo:hi]
        has_chord = np.flatnonzero(chord != NC)
        bars = arrays["bar_start"][lo:hi]
        # bars from the first to the last chord: harmonic rhythm where there is harmony
        span_bars = int(bars[has_chord[0]: has_chord[-1] + 1].sum()) + (0 if bars[has_chord[0]] else 1) \
            if len(has_chord) else 0
        row = out.setdefault(dataset, {"styles": {}, "keys": Counter(), "metres": Counter(),
                                       "splits": Counter()})
        entry = row["styles"].setdefault(style, Counter())
        entry["songs"] += 1
        entry["bars"] += int(bars.sum())
        entry["beats"] += int(arrays["beat_start"][lo:hi].sum())
        entry["chord_symbols"] += int(onset.sum())
        entry["chord_changes"] += _changes(chord)
        entry["bars_with_chords"] += span_bars
        entry["no_chord_16ths"] += int((chord == NC).sum())
        entry["16ths"] += int(hi - lo)
        tonic = (int(arrays["tonic"][index]))
        row["keys"][f"{KEY_NAMES[tonic]} {arrays['mode'][index]}"] += 1
        row["metres"]["/".join(str(int(v)) for v in arrays["time_signature"][index])] += 1
        row["splits"][str(arrays["split"][index])] += 1
    for row in out.values():
        for entry in row["styles"].values():
            entry["changes_per_bar"] = round(entry["chord_changes"] / max(1, entry["bars_with_chords"]), 3)
            entry["symbols_per_bar"] = round(entry["chord_symbols"] / max(1, entry["bars_with_chords"]), 3)
            entry["no_chord_share"] = round(entry["no_chord_16ths"] / max(1, entry["16ths"]), 3)
        for name in ("keys", "metres", "splits"):
            row[name] = dict(row[name].most_common())
        row["styles"] = {name: dict(entry) for name, entry in row["styles"].items()}
    return out


def _print_table(stats: dict, report: dict | None) -> None:
    header = f"{'set':9} {'style':10} {'songs':>5} {'bars':>6} {'beats':>6} {'chords':>6} {'changes/bar':>11}"
    print(header)
    for dataset, row in stats.items():
        for style, entry in row["styles"].items():
            print(f"{dataset:9} {style:10} {entry['songs']:5d} {entry['bars']:6d} {entry['beats']:6d} "
                  f"{entry['chord_symbols']:6d} {entry['changes_per_bar']:11.2f}")
    for dataset, row in stats.items():
        print(f"{dataset} splits: {row['splits']}")
        print(f"{dataset} metres: {row['metres']}")
        print(f"{dataset} keys: {row['keys']}")
        if report and dataset in report:
            coverage = report[dataset]
            print(f"{dataset} chord symbols: {coverage['symbols']}, out of vocabulary "
                  f"{coverage['out_of_vocabulary']}: {coverage['out_of_vocabulary_kinds']}")
            print(f"{dataset} mapping: {coverage['outcomes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.harmonizer.leadsheets",
        description="Build the lead-sheet training data (OpenEWLD, POP909) for the harmonizer.")
    parser.add_argument("command", choices=["build", "stats"])
    parser.add_argument("--datasets", type=Path, default=None,
                        help=f"folder holding openewld/ and pop909/ (default ${DATASETS_ENV}, else "
                             "../shared/datasets beside the repository root)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--limit", type=int, default=None,
                        help="read only the first N songs of each set (the split lists are then left alone)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            datasets = args.datasets or default_datasets()
            if not datasets.is_dir():
                raise FileNotFoundError(f"datasets folder {datasets} not found; give --datasets or ${DATASETS_ENV}")
            arrays, report = build(datasets, args.cache, tuple(args.sets), args.limit)
        else:
            arrays = load(args.cache)
            report_path = args.cache / REPORT_FILE
            report = json.loads(report_path.read_text()) if report_path.is_file() else None
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stats = statistics(arrays)
    if args.json:
        print(json.dumps({"statistics": stats, "coverage": report}, indent=1))
    else:
        _print_table(stats, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
