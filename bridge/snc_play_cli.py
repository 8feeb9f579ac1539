"""``scorebridge snc render`` and ``scorebridge snc play`` (docs/snc_player.md)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time
from pathlib import Path

from core.errors import ConfigError

__all__ = ["add_play_parsers", "play_command"]


def _add_mix_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="the .snc file")
    parser.add_argument(
        "--context",
        default="default",
        help="listening context: default, karaoke, focus, night, car, headphones, multichannel, "
        "or one from the file's manifest or --contexts",
    )
    parser.add_argument("--contexts", type=Path, help="TOML file of [contexts.NAME] tables")
    parser.add_argument(
        "--gain", action="append", default=[], metavar="STEM=DB", help="stem gain offset; repeatable"
    )
    parser.add_argument(
        "--pan", action="append", default=[], metavar="STEM=PAN", help="stem pan -1..1; repeatable"
    )
    parser.add_argument("--mute", action="append", default=[], metavar="STEM", help="mute a stem; repeatable")
    parser.add_argument("--solo", action="append", default=[], metavar="STEM", help="solo a stem; repeatable")
    parser.add_argument(
        "--va", type=Path, metavar="VA.csv", help="valence-arousal trajectory (time_s,valence,arousal)"
    )
    parser.add_argument(
        "--va-map", type=Path, metavar="MAP.toml", help="valence-arousal -> stem gain mapping"
    )
    parser.add_argument("--valence", type=float, default=0.0, help="constant valence -1..1 (without --va)")
    parser.add_argument("--arousal", type=float, default=0.0, help="constant arousal -1..1 (without --va)")


def add_play_parsers(actions: argparse._SubParsersAction) -> None:
    render = actions.add_parser(
        "render", help="render a mix of a .snc file to WAV (the player's DSP, offline)"
    )
    _add_mix_options(render)
    render.add_argument("-o", "--output", type=Path, required=True, help="output .wav (32-bit float)")
    render.add_argument(
        "--via",
        choices=("auto", "numpy", "pyo"),
        default="auto",
        help="auto: pyo's offline server for headphones (HRTF), numpy otherwise",
    )
    render.add_argument("--json", action="store_true", help="print the result as JSON")
    play = actions.add_parser(
        "play", help="play a .snc file live (JACK or PortAudio), decoding progressively"
    )
    _add_mix_options(play)
    play.add_argument("--backend", choices=("jack", "portaudio"), default="jack")
    play.add_argument("--start", type=float, default=0.0, metavar="SECONDS")
    play.add_argument("--loop", nargs=2, type=float, metavar=("START_S", "END_S"), help="loop a region")
    play.add_argument("--client", default="scorebridge-snc", help="JACK client name")
    play.add_argument("--no-connect", action="store_true", help="do not connect to the system outputs")
    play.add_argument("--duration", type=float, help="stop after this many seconds")


def _pairs(items: list[str], option: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise ConfigError(f"{option} {item!r}: write STEM=NUMBER, e.g. {option} vocals=-6")
        if not math.isfinite(number):
            raise ConfigError(f"{option} {item!r}: {value} is not a finite number")
        found[name] = number
    return found


def _request(args: argparse.Namespace):  # -> MixRequest (import kept lazy)
    from engines.snc_player.render import MixRequest

    for label, value in (("--valence", args.valence), ("--arousal", args.arousal)):
        if not -1.0 <= value <= 1.0:
            raise ConfigError(f"{label} {value} is outside -1..1")
    pans = _pairs(args.pan, "--pan")
    for name, pan in pans.items():
        if not -1.0 <= pan <= 1.0:
            raise ConfigError(f"--pan {name}={pan}: a pan lies in -1..1")
    gains = _pairs(args.gain, "--gain")
    for name, gain in gains.items():
        if gain > 24.0:
            raise ConfigError(f"--gain {name}={gain}: a gain offset is at most 24 dB")
    for label in ("start", "duration"):
        value = getattr(args, label, None)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ConfigError(f"--{label} {value}: a time is a finite number of seconds, 0 or more")
    loop = getattr(args, "loop", None)
    if loop and not all(math.isfinite(v) and v >= 0 for v in loop):
        raise ConfigError(f"--loop {loop[0]} {loop[1]}: times are finite numbers of seconds, 0 or more")
    return MixRequest(
        context=args.context,
        contexts_file=args.contexts,
        gains_db=gains,
        pans=pans,
        mutes=list(args.mute),
        solos=list(args.solo),
        va_file=args.va,
        mapping_file=args.va_map,
        valence=args.valence,
        arousal=args.arousal,
    )


def play_command(args: argparse.Namespace) -> int:
    if args.snc_action == "render":
        from engines.snc_player.render import render

        result = render(args.input, args.output, _request(args), via=args.via)
        if args.json:
            print(json.dumps(result, sort_keys=True))
        else:
            print(
                f"wrote {result['output']}: {result['frames']} frames, {result['channels']} ch, context "
                f"{result['context']} ({result['layout']}, via {result['via']}), "
                f"{result['speed_x_real_time']}x real time"
            )
        return 0
    return _play(args)


def _play(args: argparse.Namespace) -> int:
    from engines.snc_player.player import Player

    player = Player(
        args.input,
        _request(args),
        backend=args.backend,
        client_name=args.client,
        autoconnect=not args.no_connect,
    )
    if args.loop:
        player.set_loop(*args.loop)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        player.open(args.start)
        player.play()
        print(
            f"playing {args.input} on {args.backend} ({', '.join(player.ports)}), context "
            f"{player.pipeline.context.name}; Ctrl-C stops",
            flush=True,
        )
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.wait(0.1):
            if player.finished.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
    finally:
        stats = player.stats()
        player.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(stats, sort_keys=True))
    return 1 if stats["error"] else 0
