"""Put a model's held-out figures into its card.

    scorebridge eval harmony --models harmonizer --out report.json
    python -m training.harmonizer.card --model harmonizer --evaluation report.json

The card's ``evaluation`` section gets, for the test lead sheets, every system's means per group
(all, each data set, each style: agreement with the human chords, sevenths, changes per bar and
their ratio to the human's, chord tones, tonic endings, PCS, CTnCTR, CHE, CC), the key-detection
shares and how the report was made. The ONNX file and its sha256 do not change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.atomic import atomic_output
from engines.harmonizer.runtime import HarmonizerModel

__all__ = ["add_evaluation", "main", "set_section"]


def set_section(model: HarmonizerModel, name: str, value: dict) -> Path:
    """Set one top-level section of the model's card (atomic rewrite; the ONNX file and its
    sha256 are untouched)."""
    card_path = model.path.with_suffix(".card.json")
    card = json.loads(card_path.read_text())
    card[name] = value
    with atomic_output(card_path) as temporary:
        temporary.write_text(json.dumps(card, indent=1) + "\n")
    return card_path


def add_evaluation(model: HarmonizerModel, report: dict, command: str) -> Path:
    """Write the report's group means into the card's ``evaluation`` (atomic rewrite)."""
    if report.get("split") not in ("test", "val"):
        raise ValueError("not an `eval harmony` lead-sheet report (no split)")
    return set_section(model, "evaluation", {
        "set": f"held-out lead sheets ({report['split']} lists: OpenEWLD + POP909)",
        "command": command,
        "evaluated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "groups": report["groups"],
        "systems": {name: system["groups"] for name, system in report["systems"].items()},
        "key_detection": report["key_detection"],
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="harmonizer", help="shipped card name or .onnx path")
    parser.add_argument("--evaluation", type=Path, required=True, help="`eval harmony --out` JSON")
    parser.add_argument("--command", default="scorebridge eval harmony", help="the command that made it")
    args = parser.parse_args(argv)
    model = (HarmonizerModel.load(args.model) if args.model.endswith(".onnx")
             else HarmonizerModel.named(args.model))
    report = json.loads(args.evaluation.read_text())
    print(f"wrote evaluation to {add_evaluation(model, report, args.command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
