"""Argument types and option checks shared by the commands: a bad value is an argparse error
(exit 2) or a ``ConfigError`` (exit 1) naming the option, never a traceback."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bridge.options import check_port
from core.errors import ConfigError

__all__ = ["add_osc_target", "check_affect_options", "finite", "folder", "midi_channel", "port", "seconds",
           "target_port", "tempo"]


def port(text: str) -> int:
    try:
        return check_port(int(text), "the port")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port 0..65535 (0 = any free port)") from None


def target_port(text: str) -> int:
    value = port(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not a port a bridge listens on (1..65535)")
    return value


def tempo(text: str) -> float:
    from bridge.config import check_tempo

    try:
        return check_tempo(float(text), "the tempo")
    except ValueError as exc:
        message = str(exc) if "BPM" in str(exc) else f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(message) from None


def finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number is needed")
    return value


def seconds(text: str) -> float:
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be more than 0 seconds")
    return value


def midi_channel(text: str) -> int:
    """A MIDI channel as users see it: 1..16."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not a MIDI channel 1..16")
    return value


def folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return path.resolve()


def add_osc_target(parser: argparse.ArgumentParser, any_port: bool = False) -> None:
    """``--osc-host``/``--osc-port`` of the running bridge a command talks to."""
    parser.add_argument("--osc-host", default="127.0.0.1", help="the bridge's OSC host")
    parser.add_argument("--osc-port", type=port if any_port else target_port, default=9000,
                        help="the bridge's OSC port")


def check_affect_options(args: argparse.Namespace) -> None:
    """``--valence V --arousal A`` (a constant) or ``--va FILE`` (a curve), as ``harmonize`` and
    ``continue`` take them: both or neither of the pair, not with a curve, each in [-1, 1]."""
    if (args.valence is None) != (args.arousal is None):
        raise ConfigError("--valence and --arousal go together")
    if args.va is not None and args.valence is not None:
        raise ConfigError("give either --valence/--arousal or --va, not both")
    for name in ("valence", "arousal"):
        value = getattr(args, name)
        if value is not None and not -1.0 <= value <= 1.0:
            raise ConfigError(f"--{name} {value}: must be in [-1, 1]")
