"""``--tuning``, ``--kbm`` and ``--tuning-output``: shared by ``harmonize``, ``continue`` and ``serve``."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import ConfigError

__all__ = ["add_tuning_options", "retune_written", "tuning_from_args"]


def add_tuning_options(parser: argparse.ArgumentParser) -> None:
    from core.tuning import preset_names

    parser.add_argument("--tuning", metavar="FILE.scl|PRESET",
                        help="play in this scale and tuning: a Scala .scl file or a preset ("
                        + ", ".join(preset_names()) + "); the notes are kept to its degrees (docs/tuning.md)")
    parser.add_argument("--kbm", type=Path, metavar="FILE.kbm",
                        help="Scala keyboard mapping for --tuning (default: each degree on its nearest 12-TET key)")
    parser.add_argument("--tuning-output", choices=("mts", "mpe", "none"),
                        help="how the MIDI carries the tuning: mts (MIDI Tuning Standard, default with --tuning), "
                        "mpe (a channel per note with pitch bend) or none (nearest 12-TET key)")


def tuning_from_args(args: argparse.Namespace):  # -> tuple[Tuning | None, str]
    """The tuning the options ask for (None without --tuning) and the output mode."""
    from core.tuning import load_tuning

    if args.tuning is None:
        if args.kbm is not None or args.tuning_output not in (None, "none"):
            raise ConfigError("--kbm and --tuning-output need --tuning")
        return None, "none"
    return load_tuning(args.tuning, args.kbm), args.tuning_output or "mts"


def retune_written(path: Path, tuning, mode: str) -> None:
    """Rewrite the MIDI file at ``path`` (a temporary the command is about to publish) so that it
    sounds in ``tuning``."""
    import mido

    from core.retune import retune_file

    retune_file(mido.MidiFile(path), tuning, mode).save(path)
