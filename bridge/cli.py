"""The ``scorebridge`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from bridge import __version__
from bridge.errors import ScoreBridgeError

__all__ = ["main"]

log = logging.getLogger("scorebridge")

# Offline commands and evaluations live in their own modules. Each exposes
# ``add_parser(subparsers)``, which adds its parser and sets ``run=<function(args) -> int>``
# as a default; importing one must stay light (no torch, no model loading).
_OFFLINE_COMMANDS: tuple[str, ...] = ("bridge.va_cli", "bridge.harmonize_cli", "bridge.continue_cli",
                                      "bridge.maps_cli")
_EVALUATIONS: tuple[str, ...] = ("bridge.eval_harmony_cli", "bridge.eval_noise_cli")


def _add_osc_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--osc-host", default="127.0.0.1", help="the bridge's OSC host")
    parser.add_argument("--osc-port", type=int, default=9000, help="the bridge's OSC port")


# The commands built here; a run of one of them (``status`` from a script, ``panic`` in a hurry)
# does not import the offline modules, which bring numpy and more.
_CORE_COMMANDS = frozenset({"serve", "panic", "status", "doctor", "engines", "snc", "models"})


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first non-option word), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(offline: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``offline=False`` leaves out the offline commands and evaluations."""
    parser = argparse.ArgumentParser(prog="scorebridge", description="Real-time bridge between a DAW "
                                     "and generative music engines.")
    parser.add_argument("--version", action="version", version=f"scorebridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    serve.add_argument("--backend", help="auto (default), alsa, jack, coremidi or winmm")
    serve.add_argument("--client", help="client name prefix of the virtual ports (default scorebridge)")
    serve.add_argument("--connect-in", action="append", default=[], metavar="PATTERN",
                       help="also read from existing ports whose name matches (regex); repeatable")
    serve.add_argument("--connect-out", action="append", default=[], metavar="PATTERN",
                       help="also send to existing ports whose name matches (regex); repeatable")
    serve.add_argument("--clock", choices=("follow", "internal", "external"), help="clock source")
    serve.add_argument("--tempo", type=float, help="internal tempo in BPM (default 120)")
    serve.add_argument("--clock-out", action="store_true", help="send MIDI clock from the internal clock")
    serve.add_argument("--va", type=Path, metavar="VA.csv",
                       help="play a valence-arousal curve (va analyze's CSV/JSON) in sync with the "
                       "transport as CC automation: adds a slot 'va' (engine va)")
    serve.add_argument("--va-offset", type=float, default=0.0, metavar="S",
                       help="video time in seconds at song position 0 (with --va)")
    serve.add_argument("--va-channel", type=int, default=2, metavar="CH",
                       help="MIDI channel 1..16 of the CC lanes (with --va; default 2, the harmony)")
    serve.add_argument("--slot", action="append", default=[], metavar="NAME=ENGINE[@IN/OUT]",
                       help="engine slots instead of the config's, e.g. rule=rule@all/2; repeatable")
    serve.add_argument("--osc-host", help="OSC bind address (default 127.0.0.1)")
    serve.add_argument("--osc-port", type=int, help="OSC port (default 9000; 0 = any free port)")
    serve.add_argument("--osc-allow-remote", action="store_true", help="allow a non-loopback OSC bind")
    serve.add_argument("--osc-allow", default="", help="comma-separated client addresses allowed remotely")
    serve.add_argument("--map", action="append", default=[], metavar="FILE",
                       help="control map: a path or a shipped map's name (generic_8knob, browser); repeatable")
    serve.add_argument("--connect-control", action="append", default=[], metavar="PATTERN",
                       help="controllers: read from and send feedback to ports matching (regex); repeatable")
    serve.add_argument("--learn-map", type=Path, help="where MIDI learn saves bindings "
                       "(default ~/.config/scorebridge/learned.toml)")
    serve.add_argument("--web-host", help="browser surface bind address (default 127.0.0.1)")
    serve.add_argument("--web-port", type=int, help="browser surface port (default 9080; 0 = any free port)")
    serve.add_argument("--web-allow-remote", action="store_true",
                       help="allow a non-loopback browser surface (needs --web-token or prints one)")
    serve.add_argument("--web-token", help="token the browser surface asks for (LAN access)")
    serve.add_argument("--no-web", action="store_true", help="no browser surface")
    serve.add_argument("--duration", type=float, help="stop after this many seconds (tests, demos)")

    panic = sub.add_parser("panic", help="release every note of a running bridge")
    _add_osc_target(panic)
    panic.add_argument("--midi", metavar="PATTERN", help="instead, send All Notes Off directly to "
                       "MIDI outputs matching PATTERN (when no bridge answers)")
    panic.add_argument("--backend", default="auto")

    status = sub.add_parser("status", help="print a running bridge's status as JSON")
    _add_osc_target(status)

    doctor = sub.add_parser("doctor", help="check MIDI backends, JACK, the OSC port and models")
    _add_osc_target(doctor)

    sub.add_parser("engines", help="list engines and their parameters")

    from bridge.snc_cli import add_snc_parser

    add_snc_parser(sub)
    if offline:
        for module in _OFFLINE_COMMANDS:
            importlib.import_module(module).add_parser(sub)
        evaluate = sub.add_parser("eval", help="evaluate the models (harmony metrics, noise-injection probe)")
        evaluations = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
        for module in _EVALUATIONS:
            importlib.import_module(module).add_parser(evaluations)

    models = sub.add_parser("models", help="list the shipped models or verify them")
    models.add_argument("action", choices=("list", "verify"))
    models.add_argument("name", nargs="?", help="one model (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(offline=_command_of(words) not in _CORE_COMMANDS).parse_args(words)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "panic":
            from bridge.remote import panic
            return panic(args)
        if args.command == "status":
            from bridge.remote import status
            return status(args)
        if args.command == "doctor":
            from bridge.doctor import doctor
            return doctor(args)
        if args.command == "engines":
            return _engines()
        if args.command == "snc":
            from bridge.snc_cli import snc_command
            return snc_command(args)
        if args.command == "models":
            from bridge.models_cli import models_command
            return models_command(args)
        if hasattr(args, "run"):
            return args.run(args)
    except ScoreBridgeError as exc:
        print(f"scorebridge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 2


def _serve(args: argparse.Namespace) -> int:
    from bridge.config import load_config, parse_slot_flag
    from bridge.session import Session

    config = load_config(args.config)
    for name in ("backend", "client", "tempo", "osc_host", "osc_port"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, "tempo_bpm" if name == "tempo" else name, value)
    if args.clock:
        config.clock_mode = args.clock
    config.clock_out = config.clock_out or args.clock_out
    config.connect_in += args.connect_in
    config.connect_out += args.connect_out
    config.osc_allow_remote = config.osc_allow_remote or args.osc_allow_remote
    config.osc_allow += [a for a in args.osc_allow.split(",") if a]
    if args.slot:
        config.slots = [parse_slot_flag(s) for s in args.slot]
    if args.va is not None:
        config.slots.append(_va_slot(args))
    config.control_maps += args.map
    config.connect_control += args.connect_control
    config.learn_map = args.learn_map or config.learn_map
    config.web_host = args.web_host or config.web_host
    if args.web_port is not None:
        config.web_port, config.web_port_explicit = args.web_port, True
    config.web_port = None if args.no_web else config.web_port
    config.web_allow_remote = config.web_allow_remote or args.web_allow_remote
    config.web_token = args.web_token or config.web_token
    # Short GIL slices so a busy engine thread cannot hold up the router or scheduler for the
    # default 5 ms; this is the serving process's own setting, not a library side effect.
    sys.setswitchinterval(0.0005)
    session = Session(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    session.start()
    try:
        status = session.status()
        slots = ", ".join(f"{n} ({s['engine']})" for n, s in status["engines"].items())
        print(f"scorebridge {__version__} online: MIDI in {status['ports']['in']!r}, out "
              f"{', '.join(repr(p) for p in status['ports']['out'])} via {status['backend']}"
              f"{' (private JACK server, dummy driver)' if status['private_jack'] else ''}; "
              f"OSC {config.osc_host}:{session.osc.port}; engines: {slots}"
              f"{'; web ' + session.web.url if session.web is not None else ''}", flush=True)
        stop.wait(args.duration)
    finally:
        session.stop()
        print("scorebridge stopped: every note released", flush=True)
    return 0


def _va_slot(args: argparse.Namespace):  # -> SlotConfig
    """``--va FILE``: a ``va`` slot playing the curve, checked now so a bad file stops ``serve``
    with the line at fault before any port opens."""
    from bridge.config import parse_slot
    from engines.va import read_curve

    read_curve(args.va)
    return parse_slot({"name": "va", "engine": "va", "in_channels": "all", "out_channel": args.va_channel,
                       "params": {"curve": str(args.va.resolve()), "offset_s": args.va_offset}}, "--va")


def _engines() -> int:
    from engines import available_engines, engine_class

    for name in sorted(available_engines()):
        cls = engine_class(name)
        print(f"{name}: {cls.description} (look-ahead {cls.latency_beats} beats)")
        for param in cls.params:
            print(f"  {param.name} ({param.kind}, {param.describe_range()}, default {param.default!r})"
                  f"{': ' + param.doc if param.doc else ''}")
    return 0


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
