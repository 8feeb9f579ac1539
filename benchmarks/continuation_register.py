"""Where the continuation's hands play, with each hand's register taken from the prompt
(``--register prompt``, the default of ``scorebridge continue`` and of the engine) or the fixed
ranges (``free``).

    python -m benchmarks.continuation_register [--prompts 16] [--seeds 3] [--key-bias B ...] [--out FILE]

Prompts: the first ``--context-bars`` bars of the continuation corpus's validation pieces (never
the test split) with notes in both hands, taking the styles in turn; the shipped Smart model
continues each for ``--bars`` bars at the command's defaults (temperature 1.0, top-p 0.95, style
piano, the music's own valence/arousal), once per seed and register. Per hand and prompt: the
continuation's median pitch minus the prompt's, its highest and lowest pitch minus the prompt's,
the share of its notes more than the margin (5 semitones) outside the prompt's range of that
hand, and the share of all its notes in the prompt's key (``core.keys.best_key`` of the
prompt's duration-weighted pitch classes; a minor key's scale holds the natural minor and the
raised sixth and seventh). Figures are over prompts x seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.keys import best_key
from engines.continuation.corpus import load_split_corpus
from engines.continuation.offline import continue_notes
from engines.continuation.runtime import ContinuationModel
from engines.continuation.sample import REGISTER_MARGIN, REGISTERS, SamplingConfig, scale_pitch_classes
from engines.continuation.tokens import LEFT, RIGHT, decode

HANDS = {"right": RIGHT, "left": LEFT}


def prompts_of(count: int, bars: int, bar_steps: int = 48) -> list[tuple[str, list]]:
    data = load_split_corpus("val", progress=lambda line: print(line, file=sys.stderr))
    by_style: dict[int, list[tuple[str, list]]] = {}
    for piece in data.piece_indices("val"):
        begin, end = int(data.offsets[piece]), int(data.offsets[piece + 1])
        notes = [n for n in decode(data.tokens[begin:end])[0] if n.onset_steps < bars * bar_steps]
        if all(sum(n.hand == hand for n in notes) >= 4 for hand in HANDS.values()):
            by_style.setdefault(int(data.styles[piece]), []).append((data.piece_ids[piece], notes))
    chosen = []  # the styles in turn (piano, chorale, quartet, part), so chorales do not fill the set
    for turn in range(max(map(len, by_style.values()))):
        chosen += [pieces[turn] for _, pieces in sorted(by_style.items()) if turn < len(pieces)]
    return chosen[:count]


def key_scale(notes: list) -> frozenset[int]:
    histogram = np.zeros(12)
    for n in notes:
        histogram[n.pitch % 12] += n.duration_steps
    tonic, minor, _ = best_key(histogram)
    if not minor:
        return scale_pitch_classes(tonic, "major")
    return scale_pitch_classes(tonic, "minor") | {(tonic + 9) % 12, (tonic + 11) % 12}


def measure(args: argparse.Namespace) -> dict:
    model = ContinuationModel.load()
    prompts = prompts_of(args.prompts, args.context_bars)
    settings = {register: (register, 0.0) for register in REGISTERS}  # name -> (register, key bias)
    settings.update({f"prompt, key bias {b:g}": ("prompt", b) for b in args.key_bias})
    rows = []
    started = time.perf_counter()
    for piece, notes in prompts:
        scale = key_scale(notes)
        for register in settings:
            for seed in range(args.seeds):
                config = SamplingConfig(temperature=1.0, top_p=0.95, seed=seed, key_bias=settings[register][1])
                generated = continue_notes(
                    model, notes, 48, args.bars, config, args.context_bars, style=0,
                    register=settings[register][0],
                )
                row = {"piece": piece, "register": register, "seed": seed,
                       "in_key": float(np.mean([n.pitch % 12 in scale for n in generated])) if generated else None}
                for name, hand in HANDS.items():
                    before = [n.pitch for n in notes if n.hand == hand]
                    after = [n.pitch for n in generated if n.hand == hand]
                    row[name] = None if not after else {
                        "median_shift": float(np.median(after) - np.median(before)),
                        "high_shift": max(after) - max(before),
                        "low_shift": min(after) - min(before),
                        "beyond_margin": float(np.mean([not min(before) - REGISTER_MARGIN <= p
                                                        <= max(before) + REGISTER_MARGIN for p in after])),
                    }
                rows.append(row)
    summary = {}
    for register in settings:
        mine = [r for r in rows if r["register"] == register]
        in_key = [r["in_key"] for r in mine if r["in_key"] is not None]
        figures: dict = {"in_key": float(np.mean(in_key)) if in_key else None}
        for name in HANDS:
            played = [r[name] for r in mine if r[name] is not None]
            if not played:
                figures[name] = {"runs_playing": f"0/{len(mine)}"}
                continue
            shifts = np.array([p["median_shift"] for p in played])
            figures[name] = {
                "runs_playing": f"{len(played)}/{len(mine)}",
                "median_abs_median_shift": float(np.median(np.abs(shifts))),
                "max_abs_median_shift": float(np.max(np.abs(shifts))),
                "within_octave": float(np.mean(np.abs(shifts) <= 12)),
                "mean_high_shift": float(np.mean([p["high_shift"] for p in played])),
                "max_high_shift": int(np.max([p["high_shift"] for p in played])),
                "mean_low_shift": float(np.mean([p["low_shift"] for p in played])),
                "min_low_shift": int(np.min([p["low_shift"] for p in played])),
                "notes_beyond_margin": float(np.mean([p["beyond_margin"] for p in played])),
            }
        summary[register] = figures
    prompt_in_key = float(np.mean([np.mean([n.pitch % 12 in key_scale(notes) for n in notes]) for _, notes in prompts]))
    command = " ".join(["python -m benchmarks.continuation_register", *sys.argv[1:]])
    return {"command": command, "prompts": [p for p, _ in prompts], "seeds": args.seeds,
            "bars": args.bars, "context_bars": args.context_bars, "prompt_in_key": prompt_in_key,
            "seconds": round(time.perf_counter() - started, 1), "summary": summary, "runs": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="validation pieces used as prompts")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bars", type=int, default=4, help="bars generated")
    parser.add_argument("--context-bars", type=int, default=4, help="bars of each piece used as the prompt")
    parser.add_argument("--key-bias", type=float, nargs="*", default=[],
                        help="also run register prompt with each of these key biases")
    parser.add_argument("--out", type=Path, help="JSON with every run")
    args = parser.parse_args()
    result = measure(args)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
