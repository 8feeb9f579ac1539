"""``scorebridge snc encode|decode|verify|info|export|import|render|play``: the Stem-Native Codec's files
(docs/snc.md) and the player's mix, offline or live (docs/snc_player.md)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from cli.batch import add_batch_arguments, is_batch_input
from core.errors import BackendError, CodecError, ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    snc = sub.add_parser("snc", help="Stem-Native Codec: encode, decode, inspect")
    actions = snc.add_subparsers(dest="snc_action", metavar="ACTION", required=True)
    enc = actions.add_parser("encode", help="stems + master -> one .snc file")
    enc.add_argument("--master", type=Path, help="the mastered mix (WAV/FLAC/AIFF); required without --manifest")
    enc.add_argument("--stem", action="append", default=[], metavar="NAME=FILE", help="a stem; repeatable")
    enc.add_argument("-o", "--output", type=Path, required=True, help="the .snc file; with --manifest, a folder")
    enc.add_argument("--manifest", type=Path, help="a batch: CSV or JSON lines, one song a row (master, stems, "
                     "mode, output; docs/batch.md)")
    enc.add_argument("--mode", choices=("lossless", "transparent", "compact"), default="transparent")
    enc.add_argument("--mastering", choices=("fir-envelope", "gain"), default="fir-envelope",
                     help="lossy modes: the mastering model (gain = per-channel gain only, for comparison)")
    enc.add_argument("--mix-track", action="store_true",
                     help="also store the master as an ordinary track, the one ordinary players play "
                     "(Matroska stems profile; FLAC in lossless files, Opus 128 kb/s otherwise)")
    add_batch_arguments(enc)
    enc.set_defaults(run=_encode)
    dec = actions.add_parser("decode", help=".snc -> DIR/master.wav and DIR/<stem>.wav")
    dec.add_argument("input", type=Path)
    dec.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    dec.add_argument("--salvage", action="store_true",
                     help="decode a damaged file anyway: damaged spans come out silent and are listed")
    _add_threads(dec)
    dec.set_defaults(run=_decode)
    ver = actions.add_parser("verify", help="check a .snc file's integrity (exit 0 intact, 1 damaged)")
    ver.add_argument("input", type=Path)
    ver.add_argument("--json", action="store_true")
    _add_threads(ver)
    ver.set_defaults(run=_verify)
    info = actions.add_parser("info", help="what a .snc file holds")
    info.add_argument("input", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)
    export = actions.add_parser("export", help="a .snc file as NI Stems (.stem.mp4)")
    export.add_argument("input", type=Path)
    export.add_argument("--stems-mp4", type=Path, required=True, metavar="OUT.stem.mp4",
                        help="NI Stems: master + 4 stem groups (ALAC from a lossless file, else AAC)")
    export.add_argument("--bitrate", type=int, default=256000, help="AAC bit rate per track (b/s)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=_export)
    imp = actions.add_parser("import", help="an NI Stems file (.stem.mp4) -> .snc")
    imp.add_argument("input", type=Path, metavar="IN.stem.mp4")
    imp.add_argument("-o", "--output", type=Path, required=True)
    imp.add_argument("--mode", choices=("lossless", "transparent", "compact"),
                     help="default: lossless for ALAC tracks, transparent for AAC")
    imp.set_defaults(run=_import)
    _add_play_parsers(actions)


def _threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of threads, 1 or more")
    return int(text)


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_threads, metavar="N",
                        help="tracks decoded at once (default: the cores this process may use, at most "
                        "$SCOREBRIDGE_SNC_THREADS); 1 decodes on the calling thread. The output is the same")


def _export(args: argparse.Namespace) -> int:
    from engines.snc.stems_mp4 import export_stems_mp4

    if not 32000 <= args.bitrate <= 512000:
        raise ConfigError(f"--bitrate {args.bitrate}: an AAC track takes 32000..512000 b/s")
    result = export_stems_mp4(args.input, args.stems_mp4, args.bitrate)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        groups = "; ".join(f"{g['name']} ({', '.join(g['from']) or 'silent'})" for g in result["stems"])
        print(f"wrote {result['output']}: NI Stems, {result['codec']}, master + {groups}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from engines.snc.stems_mp4 import import_stems_mp4

    manifest = import_stems_mp4(args.input, args.output, args.mode)
    print(f"wrote {args.output}: {len(manifest.stems)} stems ({', '.join(s.name for s in manifest.stems)}), "
          f"{manifest.mode}, {manifest.duration_s:.2f} s")
    return 0


def _encode(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        from cli.batch_jobs import run_snc_batch

        if args.master is not None or args.stem:
            raise ConfigError("--manifest names every song's master and stems: no --master/--stem with it")
        return run_snc_batch(args)
    if args.master is None:
        raise ConfigError("--master FILE is required (or --manifest FILE for a batch)")
    from engines.snc import encode

    stems = {}
    for item in args.stem:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CodecError(f"--stem {item!r}: write NAME=FILE, e.g. --stem vocals=vocals.wav")
        if name in stems:
            raise CodecError(f"--stem {name!r} given twice")
        stems[name] = Path(path)
    started = time.perf_counter()
    manifest = encode(args.master, stems, args.output, args.mode, args.mastering, mix_track=args.mix_track)
    elapsed = time.perf_counter() - started
    print(f"wrote {args.output}: {len(manifest.stems)} stems + residual, {manifest.mode}, "
          f"{manifest.duration_s:.2f} s, {args.output.stat().st_size} bytes, "
          f"residual {manifest.residual['rms_dbfs']} dBFS, {manifest.duration_s / elapsed:.1f}x real time")
    return 0


def _reader(args: argparse.Namespace):  # -> SncReader (engines.snc is imported lazily)
    """The file's reader; ``decode`` and ``verify`` say on stderr when an old file cannot show
    damage inside a lossy block."""
    from engines.snc import SncReader

    reader = SncReader(args.input, threads=getattr(args, "threads", None))
    if reader.manifest.integrity is None and args.snc_action in ("decode", "verify") and not \
            getattr(args, "json", False):
        print(f"scorebridge snc {args.snc_action}: note: {args.input} is a version "
              f"{reader.manifest.version} file "
              "without per-block checksums: damage inside a lossy block cannot be detected", file=sys.stderr)
    return reader


def _decode(args: argparse.Namespace) -> int:
    paths, damage = _reader(args).decode_to_dir(args.output, salvage=args.salvage)
    for path in paths:
        print(path)
    for item in damage:
        print(f"scorebridge snc decode: salvaged: missing (silent) {_describe(vars(item))}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    result = _reader(args).verify()
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result["intact"]:
        checks = "per-block CRC32" if result["integrity"].startswith("crc32") else "container structure"
        print(f"{args.input}: intact ({checks}, every track decoded"
              f"{', PCM hashes match' if result['pcm_hashes_checked'] else ''})")
    else:
        print(f"{args.input}: damaged")
        for item in result["damage"]:
            print(f"  {_describe(item)}")
    return 0 if result["intact"] else 1


def _info(args: argparse.Namespace) -> int:
    data = _reader(args).info()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"{data['file']}: SNC v{data['version']} {data['mode']}, {data['duration_s']} s, "
          f"{data['sample_rate']} Hz, {data['channels']} ch, {data['bytes']} bytes")
    for stem in data["stems"]:
        print(f"  {stem['name']} ({stem['role']}): {stem['codec']}"
              f"{' ' + str(stem['bitrate_bps'] // 1000) + ' kb/s' if stem['bitrate_bps'] else ''}, "
              f"{stem['loudness_lufs']} LUFS")
    residual = data["residual"]
    rate = f" {residual['bitrate_bps'] // 1000} kb/s" if residual.get("bitrate_bps") else ""
    snr = residual.get("model_snr_db")
    model_snr = f", model SNR {snr} dB" if snr is not None else ""
    print(f"  residual: {residual['codec']}{rate}, {residual['rms_dbfs']} dBFS{model_snr}; "
          f"mastering: {data['mastering']['model']}; contexts: {', '.join(data['contexts']) or 'none'}")
    mix = data["mix_track"]
    print(f"  mix track: {mix['codec']}{' ' + str(mix['bitrate_bps'] // 1000) + ' kb/s' if mix['bitrate_bps'] else ''}"
          " (the default track ordinary players play)" if mix else
          "  mix track: none (ordinary players play the first track, the residual; see snc encode --mix-track)")
    return 0


def _describe(item: dict) -> str:
    what = "every track" if item["track"] < 0 else f"track {item['track']} ({item['name']})"
    return f"{what} {item['start_s']:.3f}-{item['end_s']:.3f} s: {item['problem']}"


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
        "--va", type=Path, metavar="VA.csv",
        help="valence-arousal curve (CSV/JSON time_s,valence,arousal, as va analyze writes)"
    )
    parser.add_argument(
        "--va-map", type=Path, metavar="MAP.toml", help="valence-arousal -> stem gain mapping"
    )
    parser.add_argument("--valence", type=float, default=0.0, help="constant valence -1..1 (without --va)")
    parser.add_argument("--arousal", type=float, default=0.0, help="constant arousal -1..1 (without --va)")
    parser.add_argument("--source", choices=("master", "stems"), default="master",
                        help="master: the stored master (remixed by the options above); stems: the stem "
                        "mix alone, without the residual")


def _add_play_parsers(actions: argparse._SubParsersAction) -> None:
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
    add_batch_arguments(render)
    render.set_defaults(run=_render)
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
    play.add_argument("--no-private-jack", action="store_true",
                      help="fail when no JACK server runs instead of starting a private one (dummy driver)")
    play.set_defaults(run=_play)


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
        source=args.source,
    )


def _render(args: argparse.Namespace) -> int:
    if is_batch_input(args.input):
        from cli.batch_jobs import run_render_batch

        return run_render_batch(args)  # the workers check the mix options, once each
    from engines.snc_player.render import render

    result = render(args.input, args.output, _request(args), via=args.via)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"wrote {result['output']}: {result['frames']} frames, {result['channels']} ch, context "
              f"{result['context']} ({result['layout']}, via {result['via']}), "
              f"{result['speed_x_real_time']}x real time")
    return 0


def _private_jack(sample_rate: int, allowed: bool):  # -> PrivateJackServer | None
    """Like ``serve``: when no JACK server answers, start a private one (dummy driver) for
    this command and say so; None when one already runs. Asked first (``jack_lsp``), so no
    client library prints its connection failures."""
    from bridge.jack import PrivateJackServer, default_server_name, jack_running, reap_orphaned_private_jack

    reap_orphaned_private_jack()
    if jack_running(attempts=2):
        return None
    if not allowed:
        raise BackendError(f"no JACK server {default_server_name()!r} is running (start one, or leave out "
                           "--no-private-jack to let snc play start a private one)")
    server = PrivateJackServer(sample_rate=sample_rate, period_frames=256)
    server.start()
    print(f"scorebridge snc play: no JACK server was running: started a private one "
          f"({default_server_name()!r}, dummy driver, {sample_rate} Hz, no sound card); "
          "connect to it with JACK tools, it stops with this command", file=sys.stderr, flush=True)
    return server


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
    jack = _private_jack(player.rate, not args.no_private_jack) if args.backend == "jack" else None
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
        if jack is not None:
            jack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(stats, sort_keys=True))
    return 1 if stats["error"] else 0
