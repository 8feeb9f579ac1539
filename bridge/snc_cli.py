"""``scorebridge snc encode|decode|info``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bridge.errors import CodecError

__all__ = ["add_snc_parser", "snc_command"]


def add_snc_parser(sub: argparse._SubParsersAction) -> None:
    snc = sub.add_parser("snc", help="Stem-Native Codec: encode, decode, inspect")
    actions = snc.add_subparsers(dest="snc_action", metavar="ACTION", required=True)
    enc = actions.add_parser("encode", help="stems + master -> one .snc file")
    enc.add_argument("--master", type=Path, required=True, help="the mastered mix (WAV/FLAC/AIFF)")
    enc.add_argument("--stem", action="append", default=[], metavar="NAME=FILE", help="a stem; repeatable")
    enc.add_argument("-o", "--output", type=Path, required=True)
    enc.add_argument("--mode", choices=("lossless", "transparent", "compact"), default="transparent")
    enc.add_argument("--mastering", choices=("fir-envelope", "gain"), default="fir-envelope",
                     help="lossy modes: the mastering model (gain = per-channel gain only, for comparison)")
    dec = actions.add_parser("decode", help=".snc -> DIR/master.wav and DIR/<stem>.wav")
    dec.add_argument("input", type=Path)
    dec.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    info = actions.add_parser("info", help="what a .snc file holds")
    info.add_argument("input", type=Path)
    info.add_argument("--json", action="store_true")
    from bridge.snc_play_cli import add_play_parsers  # play, render (issue 6)

    add_play_parsers(actions)


def snc_command(args: argparse.Namespace) -> int:
    if args.snc_action in ("play", "render"):  # issue 6
        from bridge.snc_play_cli import play_command
        return play_command(args)
    from engines.snc import SncReader, encode

    if args.snc_action == "encode":
        stems = {}
        for item in args.stem:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise CodecError(f"--stem {item!r}: write NAME=FILE, e.g. --stem vocals=vocals.wav")
            if name in stems:
                raise CodecError(f"--stem {name!r} given twice")
            stems[name] = Path(path)
        started = time.perf_counter()
        manifest = encode(args.master, stems, args.output, args.mode, args.mastering)
        elapsed = time.perf_counter() - started
        print(f"wrote {args.output}: {len(manifest.stems)} stems + residual, {manifest.mode}, "
              f"{manifest.duration_s:.2f} s, {args.output.stat().st_size} bytes, "
              f"residual {manifest.residual['rms_dbfs']} dBFS, {manifest.duration_s / elapsed:.1f}x real time")
        return 0
    reader = SncReader(args.input)
    if args.snc_action == "decode":
        for path in reader.decode_to_dir(args.output):
            print(path)
        return 0
    data = reader.info()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(f"{data['file']}: SNC v{data['version']} {data['mode']}, {data['duration_s']} s, "
              f"{data['sample_rate']} Hz, {data['channels']} ch, {data['bytes']} bytes")
        for stem in data["stems"]:
            print(f"  {stem['name']} ({stem['role']}): {stem['codec']}"
                  f"{' ' + str(stem['bitrate_bps'] // 1000) + ' kb/s' if stem['bitrate_bps'] else ''}, "
                  f"{stem['loudness_lufs']} LUFS")
        residual = data["residual"]
        rate = f" {residual['bitrate_bps'] // 1000} kb/s" if residual.get("bitrate_bps") else ""
        model_snr = f", model SNR {residual['model_snr_db']} dB" if residual.get("model_snr_db") is not None else ""
        print(f"  residual: {residual['codec']}{rate}, {residual['rms_dbfs']} dBFS{model_snr}; "
              f"mastering: {data['mastering']['model']}; contexts: {', '.join(data['contexts']) or 'none'}")
    return 0
