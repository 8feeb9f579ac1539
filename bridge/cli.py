"""The ``scorebridge`` command."""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import logging
import math
import os
import secrets
import signal
import stat
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from bridge import __version__
from core.errors import ConfigError, ScoreBridgeError

__all__ = ["main", "WEB_TOKEN_ENV", "MAX_TOKEN_FILE_BYTES"]

log = logging.getLogger("scorebridge")

# The environment variable that may hold the browser surface's token (not visible in ``ps``).
WEB_TOKEN_ENV = "SCOREBRIDGE_WEB_TOKEN"
# A token file holds one line; anything longer is not a token file.
MAX_TOKEN_FILE_BYTES = 4096
# Signals that stop an offline command through its cleanup (temporary files are removed in
# ``finally`` blocks); ``serve`` and ``snc play`` install their own handlers.
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class _Stopped(BaseException):
    """Raised in the main thread by a stop signal; a BaseException so that no ``except
    Exception`` of a command swallows it, while every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


# -- argument types: a bad value is an argparse error (exit 2) naming the option ----------------
def _port(text: str) -> int:
    from bridge.options import check_port

    try:
        return check_port(int(text), "the port")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port 0..65535 (0 = any free port)") from None


def _target_port(text: str) -> int:
    port = _port(text)
    if port == 0:
        raise argparse.ArgumentTypeError("0 is not a port a bridge listens on (1..65535)")
    return port


def _tempo(text: str) -> float:
    from bridge.config import check_tempo

    try:
        return check_tempo(float(text), "the tempo")
    except ValueError as exc:
        message = str(exc) if "BPM" in str(exc) else f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(message) from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number is needed")
    return value


def _seconds(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be more than 0 seconds")
    return value


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return path.resolve()

# Offline commands and evaluations live in their own modules. Each exposes
# ``add_parser(subparsers)``, which adds its parser and sets ``run=<function(args) -> int>``
# as a default; importing one must stay light (no torch, no model loading).
_OFFLINE_COMMANDS: tuple[str, ...] = ("bridge.va_cli", "bridge.harmonize_cli", "bridge.continue_cli",
                                      "bridge.maps_cli")
_EVALUATIONS: tuple[str, ...] = ("bridge.eval_harmony_cli", "bridge.eval_noise_cli")


def _add_osc_target(parser: argparse.ArgumentParser, any_port: bool = False) -> None:
    parser.add_argument("--osc-host", default="127.0.0.1", help="the bridge's OSC host")
    parser.add_argument("--osc-port", type=_port if any_port else _target_port, default=9000,
                        help="the bridge's OSC port")


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
    serve.add_argument("--tempo", type=_tempo, help="internal tempo in BPM, 20..400 (default 120)")
    serve.add_argument("--clock-out", action="store_true", help="send MIDI clock from the internal clock")
    serve.add_argument("--va", type=Path, metavar="VA.csv",
                       help="play a valence-arousal curve (va analyze's CSV/JSON) in sync with the "
                       "transport as CC automation: adds a slot 'va' (engine va)")
    serve.add_argument("--va-offset", type=_finite, default=0.0, metavar="S",
                       help="video time in seconds at song position 0 (with --va)")
    serve.add_argument("--va-channel", type=int, default=2, metavar="CH",
                       help="MIDI channel 1..16 of the CC lanes (with --va; default 2, the harmony)")
    serve.add_argument("--slot", action="append", default=[], metavar="NAME=ENGINE[@IN/OUT]",
                       help="engine slots instead of the config's, e.g. rule=rule@all/2; repeatable")
    serve.add_argument("--osc-host", help="OSC bind address (default 127.0.0.1)")
    serve.add_argument("--osc-port", type=_port, help="OSC port (default 9000; 0 = any free port)")
    serve.add_argument("--osc-allow-remote", action="store_true", help="allow a non-loopback OSC bind")
    serve.add_argument("--osc-allow", default="", help="comma-separated client addresses allowed remotely")
    serve.add_argument("--map", action="append", default=[], metavar="FILE",
                       help="control map: a path or a shipped map's name (generic_8knob, browser); repeatable")
    serve.add_argument("--connect-control", action="append", default=[], metavar="PATTERN",
                       help="controllers: read from and send feedback to ports matching (regex); repeatable")
    serve.add_argument("--learn-map", type=Path, help="where MIDI learn saves bindings "
                       "(default ~/.config/scorebridge/learned.toml)")
    serve.add_argument("--web-host", help="browser surface bind address (default 127.0.0.1)")
    serve.add_argument("--web-port", type=_port,
                       help="browser surface port (default 9080; 0 = any free port)")
    serve.add_argument("--web-allow-remote", action="store_true",
                       help="allow a non-loopback browser surface (needs --web-token or prints one)")
    serve.add_argument("--web-token-file", type=Path, metavar="FILE",
                       help="file holding the token the browser surface asks for (LAN access); "
                       f"or set ${WEB_TOKEN_ENV}")
    serve.add_argument("--web-token", help="the token itself (visible to every user in `ps`: prefer "
                       "--web-token-file)")
    serve.add_argument("--no-web", action="store_true", help="no browser surface")
    serve.add_argument("--allow-dir", action="append", default=[], type=_folder, metavar="DIR",
                       help="a folder whose files OSC, maps and the browser may name in file parameters "
                       "(besides the config file's folder); repeatable")
    serve.add_argument("--duration", type=_seconds, help="stop after this many seconds (tests, demos)")

    panic = sub.add_parser("panic", help="release every note of a running bridge")
    _add_osc_target(panic)
    panic.add_argument("--midi", metavar="PATTERN", help="instead, send All Notes Off directly to "
                       "MIDI outputs matching PATTERN (when no bridge answers)")
    panic.add_argument("--backend", default="auto")

    status = sub.add_parser("status", help="print a running bridge's status as JSON")
    _add_osc_target(status)

    doctor = sub.add_parser("doctor", help="check MIDI backends, JACK, the OSC port and models")
    _add_osc_target(doctor, any_port=True)

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
    args = build_parser(offline=_command_of(words) not in _CORE_COMMANDS).parse_args(words)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        build_parser().print_help()
        return 2
    if args.command == "serve":
        try:
            return _serve(args)
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
    """Every command but ``serve``."""
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
    return 2


def _web_token(args: argparse.Namespace, config_token: str | None) -> str | None:
    """The browser surface's token: --web-token-file, --web-token (warned: ``ps`` shows it),
    $SCOREBRIDGE_WEB_TOKEN, then the config file's ``token``."""
    if args.web_token_file is not None:
        return _read_token_file(args.web_token_file)
    if args.web_token:
        log.warning("--web-token puts the token in the process list, where every user of this machine "
                    "can read it; prefer --web-token-file FILE or $%s", WEB_TOKEN_ENV)
        return args.web_token
    if os.environ.get(WEB_TOKEN_ENV, "").strip():
        return os.environ[WEB_TOKEN_ENV].strip()
    return config_token


def _read_token_file(path: Path) -> str:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TOKEN_FILE_BYTES:
            raise ConfigError(f"--web-token-file {path}: not a regular file of at most "
                              f"{MAX_TOKEN_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--web-token-file {path}: cannot be read ({exc})") from None
    if not text or "\n" in text:
        raise ConfigError(f"--web-token-file {path}: must hold the token on one line")
    if info.st_mode & 0o077:
        log.warning("--web-token-file %s can be read by other users (chmod 600 it)", path)
    return text


def _generated_token() -> tuple[str, Path]:
    """A token for a LAN surface started without one, saved where only this user reads it:
    printing it would leave it in terminal logs and service journals."""
    from bridge.control import default_learn_map

    path = default_learn_map().with_name("web-token")
    token = secrets.token_urlsafe(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(token + "\n")
    return token, path


def _public_url(url: str) -> str:
    """The browser surface's address without its token."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


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
        config.allow_dirs.append(args.va.resolve().parent)
    config.control_maps += args.map
    config.connect_control += args.connect_control
    config.learn_map = args.learn_map or config.learn_map
    config.web_host = args.web_host or config.web_host
    if args.web_port is not None:
        config.web_port, config.web_port_explicit = args.web_port, True
    config.web_port = None if args.no_web else config.web_port
    config.web_allow_remote = config.web_allow_remote or args.web_allow_remote
    config.web_token = _web_token(args, config.web_token)
    token_file = None
    if config.web_allow_remote and config.web_port is not None and not config.web_token:
        config.web_token, token_file = _generated_token()
    config.allow_dirs += args.allow_dir
    # Short GIL slices so a busy engine thread cannot hold up the router or scheduler for the
    # default 5 ms; this is the serving process's own setting, not a library side effect.
    sys.setswitchinterval(0.0005)
    # A crash inside a native library (rtmidi, JACK, ONNX Runtime) prints every thread's stack
    # to stderr, so that a report names the place instead of only "Segmentation fault".
    faulthandler.enable()
    session = Session(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    for signum in _STOP_SIGNALS:  # a closed terminal (SIGHUP) releases every note like SIGTERM
        signal.signal(signum, on_signal)
    session.start()
    try:
        status = session.status()
        slots = ", ".join(f"{n} ({s['engine']})" for n, s in status["engines"].items())
        print(f"scorebridge {__version__} online: MIDI in {status['ports']['in']!r}, out "
              f"{', '.join(repr(p) for p in status['ports']['out'])} via {status['backend']}"
              f"{' (private JACK server, dummy driver)' if status['private_jack'] else ''}; "
              f"OSC {config.osc_host}:{session.osc.port}; engines: {slots}"
              f"{'; web ' + _public_url(session.web.url) if session.web is not None else ''}"
              f"{f' (token in {token_file})' if token_file and session.web is not None else ''}", flush=True)
        stop.wait(args.duration)
    finally:
        session.stop()
        print("scorebridge stopped: every note released", flush=True)
    return 0


def _va_slot(args: argparse.Namespace):  # -> SlotConfig
    """``--va FILE``: a ``va`` slot playing the curve, checked now so a bad file stops ``serve``
    with the line at fault before any port opens."""
    from bridge.config import parse_slot
    from core.files import regular_file
    from engines.va import read_curve
    from engines.va.live import MAX_CURVE_BYTES

    read_curve(regular_file(args.va, MAX_CURVE_BYTES, "--va"))
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
