"""The ``scorebridge`` command: one parser, one dispatch.

Each command group lives in its own module, listed in ``COMMANDS``. A module exposes
``register(subparsers)``, which adds its parser(s) and sets ``run=<function(args) -> int>`` as a
default; importing one stays light (no torch, no model loading). A run imports only the module of
the command it names, so ``status`` from a script or ``panic`` in a hurry does not load numpy.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from bridge import __version__
from core.errors import ScoreBridgeError

__all__ = ["COMMANDS", "build_parser", "main"]

# command -> the module that registers it, in the order ``--help`` lists them
COMMANDS: dict[str, str] = {
    "serve": "cli.serve",
    "panic": "cli.core_commands",
    "status": "cli.core_commands",
    "engines": "cli.core_commands",
    "models": "cli.core_commands",
    "doctor": "cli.doctor",
    "snc": "cli.snc",
    "va": "cli.va",
    "harmonize": "cli.harmonize",
    "continue": "cli.continue_",
    "score": "cli.score",
    "maps": "cli.maps",
    "eval": "cli.evaluate",
}
# Signals that stop a command through its cleanup (temporary files are removed in ``finally``
# blocks); a command registered with ``own_signals=True`` (``serve``) installs its own handlers.
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class _Stopped(BaseException):
    """Raised in the main thread by a stop signal; a BaseException so that no ``except
    Exception`` of a command swallows it, while every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first non-option word), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With a known ``command`` only its module is imported and registered;
    otherwise every command is (for ``--help`` and for argparse's list of valid choices)."""
    parser = argparse.ArgumentParser(prog="scorebridge", description="Real-time bridge between a DAW "
                                     "and generative music engines. MIDI channels are numbered 1-16 "
                                     "everywhere, as DAWs show them.")
    parser.add_argument("--version", action="version", version=f"scorebridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, so that a closed pipe is noticed before the interpreter exits
        return code
    except BrokenPipeError:
        # The reader went away (``scorebridge engines | head -1``): end quietly, as the Python
        # documentation recommends, with stdout pointed at devnull so the final flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(words)).parse_args(words)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        build_parser().print_help()
        return 2
    if getattr(args, "own_signals", False):
        try:
            return _run_command(args)
        except ScoreBridgeError as exc:
            print(f"scorebridge {args.command}: error: {exc}", file=sys.stderr)
            return 1
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in _STOP_SIGNALS}
    try:
        return _run_command(args)
    except ScoreBridgeError as exc:
        print(f"scorebridge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except _Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        print(f"scorebridge: stopped by {name}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print("scorebridge: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_command(args: argparse.Namespace) -> int:
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
