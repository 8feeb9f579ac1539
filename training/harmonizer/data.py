"""Build the harmonizer's training cache and split lists from music21's corpus.

    python -m training.harmonizer.data build [--cache DIR] [--limit N]
    python -m training.harmonizer.data summary [--cache DIR]

``build`` parses every source (music21), writes ``raw_q16.npz`` under the cache folder (default:
the user cache, ``core.paths.cache_dir("harmonizer")``) and rewrites the committed split lists in
``engines/harmonizer/splits/``. ``summary`` prints pieces, grid steps and windows per split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from engines.harmonizer.dataset import (
    DEFAULT_CACHE,
    RAW_FILE,
    SPLITS_DIR,
    STYLES,
    corpus_sources,
    load_raw,
    make_windows,
    pieces_to_arrays,
)
from engines.harmonizer.extract import PieceSkipped, extract_piece
from engines.harmonizer.grid import GridConfig

__all__ = ["build_cache", "summary", "main"]


def build_cache(cache_dir: Path = DEFAULT_CACHE, limit: int | None = None) -> Path:
    """Parse every source, save the concatenated Q16 arrays and write the split lists."""
    from music21 import corpus  # offline only


    cache_dir.mkdir(parents=True, exist_ok=True)
    sources = corpus_sources()[:limit]
    pieces, skipped = [], []
    started = time.time()
    for index, (piece_id, style) in enumerate(sources):
        try:
            # forceSource: music21's pickle cache is shared with other jobs parsing the corpus
            # at the same time, and a half-written pickle breaks a build
            score = corpus.parse(piece_id, forceSource=True)
            pieces.append(extract_piece(score, piece_id, style))
        except PieceSkipped as error:
            skipped.append(str(error))
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
            skipped.append(f"{piece_id}: parse failed: {type(error).__name__}: {error}")
        if (index + 1) % 25 == 0 or index + 1 == len(sources):
            print(
                f"[{index + 1}/{len(sources)}] kept {len(pieces)} skipped {len(skipped)} "
                f"{time.time() - started:.0f}s",
                flush=True,
            )
    arrays = pieces_to_arrays(pieces)
    lengths = np.diff(arrays["offsets"])
    out = cache_dir / RAW_FILE
    np.savez_compressed(out, **arrays)
    (cache_dir / "skipped.txt").write_text("\n".join(skipped) + "\n")
    SPLITS_DIR.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        ids = [p for p, s in zip(arrays["piece_id"], arrays["split"]) if s == split]
        (SPLITS_DIR / f"{split}.txt").write_text("\n".join(ids) + "\n")
    print(
        f"wrote {out}: {len(pieces)} pieces, {int(lengths.sum())} sixteenths, "
        f"{len(skipped)} skipped (see {cache_dir / 'skipped.txt'})",
        flush=True,
    )
    return out




def summary(raw: dict[str, np.ndarray], config: GridConfig) -> dict:
    """Pieces, grid steps and windows per split (and per style) for the model card and docs."""
    out: dict = {"config": config.to_dict(), "splits": {}}
    steps_per_sixteenth = 0.25 if config.grid == "q4" else 1.0
    for split in ("train", "val", "test"):
        mask = raw["split"] == split
        lengths = np.diff(raw["offsets"])[mask]
        windows = make_windows(raw, config, split) if mask.any() else []
        styles = {STYLES[s]: int((raw["style"][mask] == s).sum()) for s in range(len(STYLES))}
        out["splits"][split] = {
            "pieces": int(mask.sum()),
            "pieces_per_style": styles,
            "grid_steps": int(np.ceil(lengths * steps_per_sixteenth).sum()),
            "windows": len(windows),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["build", "summary"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--limit", type=int, default=None, help="parse only the first N sources")
    args = parser.parse_args(argv)
    if args.command == "build":
        build_cache(args.cache, args.limit)
    raw = load_raw(args.cache)
    for config in (
        GridConfig("q4", True, "pc", 80),
        GridConfig("q4", False, "pc", 64),
        GridConfig("q16", True, "pc_fr", 320),
    ):
        print(json.dumps(summary(raw, config)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
