"""Build the continuation's training cache and split lists from music21's corpus.

    python -m training.continuation.data build [--cache DIR] [--limit N]
    python -m training.continuation.data stats [--cache DIR]
    python -m training.continuation.data relabel --valence-lead 4 --out DIR [--cache DIR]

``build`` parses every source (music21; hands and velocities as in ``engines.continuation.corpus``),
writes ``corpus_v1.npz`` under the cache folder (default: the user cache,
``core.paths.cache_dir("continuation")``) and rewrites the committed split lists in
``engines/continuation/splits/``. ``relabel`` recomputes the labels with a valence look-ahead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from engines.continuation.affect import token_va, valence_arousal
from engines.continuation.corpus import (
    CACHE_FILE,
    DEFAULT_CACHE,
    SPLITS_DIR,
    STYLES,
    Corpus,
    load_corpus,
    save_arrays,
    split_of,
    tokenize_piece,
)
from engines.continuation.tokens import NOTE_BASE, NOTE_ON, NUM_PITCHES, decode

__all__ = ["build_cache", "corpus_sources", "main", "pitch_hand_nmi", "relabel", "summary"]

_PART_MUSIC = ("bach", "beethoven", "haydn", "mozart", "monteverdi")
_KEYBOARD_AND_MIXED = (
    "beach",
    "chopin",
    "cpebach",
    "handel",
    "joplin",
    "johnson_j_r",
    "liliuokalani",
    "schoenberg",
    "schubert",
    "schumann_clara",
    "schumann_robert",
    "weber",
    "corelli",
    "webern",
)
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


def corpus_sources() -> list[str]:
    """Corpus-relative paths to parse, one file per work (.mxl preferred over .krn)."""
    from music21 import corpus  # build time only

    chosen: dict[str, str] = {}
    for composer in _PART_MUSIC + _KEYBOARD_AND_MIXED:
        for path in sorted(map(str, corpus.getComposer(composer))):
            if not path.endswith(_SCORE_SUFFIXES):
                continue
            relative = path.split("/corpus/", 1)[-1]
            stem = relative.rsplit(".", 1)[0]
            if stem not in chosen or chosen[stem].endswith(".krn"):
                chosen[stem] = relative
    return sorted(chosen.values())


def build_cache(cache_dir: Path = DEFAULT_CACHE, limit: int | None = None) -> Path:
    """Parse, tokenize and label every source; write the cache and the split lists."""
    sources = corpus_sources()[:limit] if limit else corpus_sources()
    all_tokens, all_va, offsets, ids, styles, skipped = [], [], [0], [], [], []
    totals = {"out_of_range": 0, "grace": 0, "off_grid": 0, "shortened": 0, "duplicates": 0}
    started = time.monotonic()
    for number, piece_id in enumerate(sources, 1):
        try:
            tokens, labels, style, counters = tokenize_piece(piece_id)
        except Exception as error:  # noqa: BLE001 - a bad score is reported and skipped, never ends the build
            skipped.append(f"{piece_id}: {type(error).__name__}: {error}")
            continue
        for key, value in counters.items():
            totals[key] += value
        all_tokens.append(tokens)
        all_va.append(labels)
        offsets.append(offsets[-1] + len(tokens))
        ids.append(piece_id)
        styles.append(STYLES.index(style))
        if number % 25 == 0 or number == len(sources):
            print(
                f"[{number}/{len(sources)}] {time.monotonic() - started:.0f}s "
                f"{piece_id} ({style}, {len(tokens)} tokens)",
                flush=True,
            )
    path = cache_dir / CACHE_FILE
    save_arrays(
        path,
        tokens=np.concatenate(all_tokens),
        va=np.concatenate(all_va),
        offsets=np.array(offsets, dtype=np.int64),
        piece_ids=np.array(ids),
        styles=np.array(styles, dtype=np.int64),
    )
    SPLITS_DIR.mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (SPLITS_DIR / f"{split}.txt").write_text("".join(f"{p}\n" for p in ids if split_of(p) == split))
    (cache_dir / "build.json").write_text(
        json.dumps(
            {"dropped": totals, "skipped": skipped, "seconds": round(time.monotonic() - started, 1)}, indent=1
        )
    )
    print(json.dumps({"dropped": totals, "skipped": len(skipped)}), flush=True)
    return path


def relabel(cache_dir: Path, out_dir: Path, valence_lead: int) -> Path:
    """A copy of the cache with every piece's labels recomputed from its tokens (same tokens,
    offsets, ids and styles; no music21), the valence looking ``valence_lead`` quarters ahead."""
    source = np.load(cache_dir / CACHE_FILE)
    tokens, offsets = source["tokens"], source["offsets"]
    labels = []
    for piece in range(len(offsets) - 1):
        piece_tokens = tokens[offsets[piece] : offsets[piece + 1]].astype(np.int64)
        notes = decode(piece_tokens)[0]
        end = max((n.end_steps for n in notes), default=1)
        labels.append(token_va(piece_tokens, valence_arousal(notes, end, valence_lead=valence_lead)))
    path = out_dir / CACHE_FILE
    save_arrays(
        path,
        **{key: source[key] for key in ("tokens", "offsets", "piece_ids", "styles")},
        va=np.concatenate(labels).astype(np.float16),
        valence_lead=np.array(valence_lead, dtype=np.int64),
    )
    return path


def pitch_hand_nmi(tokens: np.ndarray) -> float:
    """NMI(pitch, hand) over all NOTE_ON tokens: I / mean(H(pitch), H(hand)) (arithmetic)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    offset = tokens - NOTE_BASE
    group, pitch = offset // NUM_PITCHES, offset % NUM_PITCHES
    on = (offset >= 0) & (group < 4) & (group % 2 == NOTE_ON)
    joint = np.zeros((NUM_PITCHES, 2))
    np.add.at(joint, (pitch[on], group[on] // 2), 1.0)
    if joint.sum() == 0:
        raise ValueError("no NOTE_ON tokens")
    joint /= joint.sum()
    p_pitch, p_hand = joint.sum(1), joint.sum(0)

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(p_pitch, p_hand)[nz])).sum())
    return mutual / max(1e-12, 0.5 * (entropy(p_pitch) + entropy(p_hand)))


def summary(data: Corpus) -> dict:
    """Pieces, tokens and styles per split, and NMI(pitch, hand) of all NOTE_ONs."""
    result: dict = {"nmi_pitch_hand": round(pitch_hand_nmi(data.tokens), 4), "paper_nmi": 0.167}
    for split in ("train", "val", "test"):
        index = data.piece_indices(split)
        lengths = data.offsets[index + 1] - data.offsets[index]
        result[split] = {
            "pieces": len(index),
            "tokens": int(lengths.sum()),
            "styles": {STYLES[s]: int((data.styles[index] == s).sum()) for s in range(len(STYLES))},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.continuation.data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("build", "stats", "relabel"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--valence-lead", type=int, default=4, help="relabel: quarters the valence looks ahead")
    parser.add_argument("--out", type=Path, help="relabel: the new cache directory")
    parser.add_argument("--limit", type=int, default=None, help="parse only the first N sources")
    args = parser.parse_args(argv)
    if args.command == "build":
        build_cache(args.cache, args.limit)
    if args.command == "relabel":
        if args.out is None:
            parser.error("relabel needs --out DIR")
        relabel(args.cache, args.out, args.valence_lead)
        args.cache = args.out
    print(json.dumps(summary(load_corpus(args.cache)), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
