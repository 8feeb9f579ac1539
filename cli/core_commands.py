"""``scorebridge panic``, ``status``, ``engines`` and ``models``: small commands that talk to a
running bridge over OSC (or, for ``panic --midi``, straight to MIDI outputs) or list what is
installed."""

from __future__ import annotations

import argparse
import json
import re
import sys

from cli.arguments import add_osc_target
from core.errors import ScoreBridgeError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    panic = sub.add_parser("panic", help="release every note of a running bridge")
    add_osc_target(panic)
    panic.add_argument("--midi", metavar="PATTERN", help="instead, send All Notes Off directly to "
                       "MIDI outputs matching PATTERN (when no bridge answers)")
    panic.add_argument("--backend", default="auto")
    panic.set_defaults(run=panic_command)

    status = sub.add_parser("status", help="print a running bridge's status as JSON")
    add_osc_target(status)
    status.set_defaults(run=status_command)

    engines = sub.add_parser("engines", help="list engines and their parameters")
    engines.set_defaults(run=engines_command)

    models = sub.add_parser("models", help="list the shipped models or verify them")
    models.add_argument("action", choices=("list", "verify"))
    models.add_argument("name", nargs="?", help="one model (default: all)")
    models.set_defaults(run=_models)


def panic_command(args: argparse.Namespace) -> int:
    from bridge.osc import PREFIX
    from bridge.remote import request

    if args.midi:
        return _panic_midi(args.midi, args.backend)
    released = request(args.osc_host, args.osc_port, f"{PREFIX}/panic", f"{PREFIX}/panic/done")
    count = released[0] if released else 0
    print(f"panic: bridge released {count} notes and sent All Notes Off on all channels")
    return 0


def _panic_midi(pattern: str, backend_name: str) -> int:
    from bridge.output import all_notes_off
    from bridge.ports import select_backend

    backend, private = select_backend(backend_name)
    try:
        targets = [n for n in backend.list_outputs() if re.search(pattern, n, re.IGNORECASE)]
        if not targets:
            raise ScoreBridgeError(f"no MIDI output matches {pattern!r}; present: {backend.list_outputs()}")
        for name in targets:
            port = backend.connect_output("scorebridge-panic", name)
            try:
                for message in all_notes_off():
                    port.send(message)
            finally:
                port.close()
            print(f"panic: All Notes Off on all channels of {name}")
    finally:
        if private is not None:
            private.stop()
    return 0


def status_command(args: argparse.Namespace) -> int:
    from bridge.osc import PREFIX
    from bridge.remote import request

    reply = request(args.osc_host, args.osc_port, f"{PREFIX}/status", f"{PREFIX}/status")
    try:
        report = json.loads(reply[0])
    except (IndexError, TypeError, ValueError, RecursionError):
        raise ScoreBridgeError(f"the reply on {args.osc_host}:{args.osc_port} is not a bridge "
                               "status") from None
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def engines_command(_args: argparse.Namespace) -> int:
    from engines import available_engines, engine_class

    for name in sorted(available_engines()):
        cls = engine_class(name)
        print(f"{name}: {cls.description} (look-ahead {cls.latency_beats} beats)")
        for param in cls.params:
            print(f"  {param.name} ({param.kind}, {param.describe_range()}, default {param.default!r})"
                  f"{': ' + param.doc if param.doc else ''}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from cli.models import models_command

    return models_command(args)
