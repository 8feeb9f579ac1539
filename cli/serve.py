"""``scorebridge serve``: run the bridge until a signal, ``--duration`` or a fatal error."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import secrets
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge import __version__
from bridge.ports.native_stderr import NativeStderr
from cli.arguments import finite, folder, midi_channel, port, seconds, tempo
from cli.tuning_options import add_tuning_options, tuning_from_args
from core.errors import ConfigError

__all__ = ["MAX_TOKEN_FILE_BYTES", "WEB_TOKEN_ENV", "register", "serve_command"]

log = logging.getLogger("scorebridge")

# The environment variable that may hold the browser surface's token (not visible in ``ps``).
WEB_TOKEN_ENV = "SCOREBRIDGE_WEB_TOKEN"
# A token file holds one line; anything longer is not a token file.
MAX_TOKEN_FILE_BYTES = 4096
_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    serve.add_argument("--backend", help="auto (default), alsa, jack, coremidi or winmm")
    serve.add_argument("--client", help="client name prefix of the virtual ports (default scorebridge)")
    serve.add_argument("--connect-in", action="append", default=[], metavar="PATTERN",
                       help="also read from existing ports whose name matches (regex); repeatable")
    serve.add_argument("--connect-out", action="append", default=[], metavar="PATTERN",
                       help="also send to existing ports whose name matches (regex); repeatable")
    serve.add_argument("--clock", choices=("follow", "internal", "external"), help="clock source")
    serve.add_argument("--tempo", type=tempo, help="internal tempo in BPM, 20..400 (default 120)")
    serve.add_argument("--clock-out", action="store_true", help="send MIDI clock from the internal clock")
    serve.add_argument("--va", type=Path, metavar="VA.csv",
                       help="play a valence-arousal curve (va analyze's CSV/JSON) in sync with the "
                       "transport as CC automation: adds a slot 'va' (engine va)")
    serve.add_argument("--va-offset", type=finite, default=0.0, metavar="S",
                       help="video time in seconds at song position 0 (with --va)")
    serve.add_argument("--va-channel", type=midi_channel, default=2, metavar="CH",
                       help="MIDI channel 1..16 of the CC lanes (with --va; default 2, the harmony)")
    serve.add_argument("--slot", action="append", default=[], metavar="NAME=ENGINE[@IN/OUT]",
                       help="engine slots instead of the config's, e.g. rule=rule@all/2 (channels "
                       "1..16); repeatable")
    serve.add_argument("--osc-host", help="OSC bind address (default 127.0.0.1)")
    serve.add_argument("--osc-port", type=port, help="OSC port (default 9000; 0 = any free port)")
    serve.add_argument("--osc-allow-remote", action="store_true", help="allow a non-loopback OSC bind")
    serve.add_argument("--osc-allow", default="", help="comma-separated client addresses allowed remotely")
    serve.add_argument("--map", action="append", default=[], metavar="FILE",
                       help="control map: a path or a shipped map's name (generic_8knob, browser); "
                       "repeatable")
    serve.add_argument("--connect-control", action="append", default=[], metavar="PATTERN",
                       help="controllers: read from and send feedback to ports matching (regex); repeatable")
    serve.add_argument("--learn-map", type=Path, help="where MIDI learn saves bindings "
                       "(default ~/.config/scorebridge/learned.toml)")
    serve.add_argument("--web-host", help="browser surface bind address (default 127.0.0.1)")
    serve.add_argument("--web-port", type=port,
                       help="browser surface port (default 9080; 0 = any free port)")
    serve.add_argument("--web-allow-remote", action="store_true",
                       help="allow a non-loopback browser surface (needs --web-token or prints one)")
    serve.add_argument("--web-token-file", type=Path, metavar="FILE",
                       help="file holding the token the browser surface asks for (LAN access); "
                       f"or set ${WEB_TOKEN_ENV}")
    serve.add_argument("--web-token", help="the token itself (visible to every user in `ps`: prefer "
                       "--web-token-file)")
    serve.add_argument("--no-web", action="store_true", help="no browser surface")
    serve.add_argument("--allow-dir", action="append", default=[], type=folder, metavar="DIR",
                       help="a folder whose files OSC, maps and the browser may name in file parameters "
                       "(besides the config file's folder); repeatable")
    serve.add_argument("--duration", type=seconds, help="stop after this many seconds (tests, demos)")
    add_tuning_options(serve)
    serve.set_defaults(run=serve_command, own_signals=True)


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
    """A token for a LAN surface started without one, saved where only this user reads it
    (a secret, so 0600 whatever the umask): printing it would leave it in terminal logs and
    service journals."""
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


def serve_command(args: argparse.Namespace) -> int:
    from bridge.config import load_config, parse_slot_flag

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
    if args.tuning is not None or args.kbm is not None or args.tuning_output is not None:
        tuning_from_args(args)  # checks the options and the files before anything opens
        config.tuning, config.kbm = args.tuning, args.kbm
        config.tuning_output = args.tuning_output or "mts"
    # Short GIL slices so a busy engine thread cannot hold up the router or scheduler for the
    # default 5 ms; this is the serving process's own setting, not a library side effect.
    sys.setswitchinterval(0.0005)
    # Native libraries write to file descriptor 2 from real-time threads: never let a slow
    # reader of stderr block them (bridge/ports/native_stderr.py).
    native_stderr = NativeStderr()
    native_stderr.start()
    # A crash inside a native library (rtmidi, JACK, ONNX Runtime) prints every thread's stack
    # to stderr, so that a report names the place instead of only "Segmentation fault".
    faulthandler.enable()
    try:
        return _serve(config, args, token_file, native_stderr)
    finally:
        faulthandler.disable()
        native_stderr.stop()


def _serve(config: Any, args: argparse.Namespace, token_file: Path | None, native_stderr: NativeStderr) -> int:
    from bridge.session import Session

    session = Session(config)
    session.native_counters = native_stderr.counters
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
        _wait_for_stop(stop, args.duration)
    finally:
        session.stop()
        print("scorebridge stopped: every note released", flush=True)
    busy = session.host.busy_slots()
    if busy:  # a worker still inside a native call: skip the interpreter's teardown under it
        print(f"scorebridge: slot(s) {', '.join(busy)} still inside an engine call; exiting without waiting",
              file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(0)
    return 0


# How often the main thread wakes while it waits. Linux may deliver SIGTERM to any of the
# bridge's threads; Python then runs the handler in the main thread only when that thread next
# runs Python code, and one blocked in an untimed wait never does (a test's SIGTERM was lost so).
_SIGNAL_CHECK_S = 0.2


def _wait_for_stop(stop: threading.Event, duration_s: float | None) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not stop.wait(_SIGNAL_CHECK_S if deadline is None else
                        max(0.0, min(_SIGNAL_CHECK_S, deadline - time.monotonic()))):
        if deadline is not None and time.monotonic() >= deadline:
            return


def _va_slot(args: argparse.Namespace):  # -> SlotConfig
    """``--va FILE``: a ``va`` slot playing the curve, checked now so a bad file stops ``serve``
    with the line at fault before any port opens."""
    from bridge.config import parse_slot
    from engines.va import read_curve

    read_curve(args.va)  # a regular file of bounded size, every line checked
    return parse_slot({"name": "va", "engine": "va", "in_channels": "all", "out_channel": args.va_channel,
                       "params": {"curve": str(args.va.resolve()), "offset_s": args.va_offset}}, "--va")
