"""``scorebridge snc encode|decode|info|verify`` (play and render: bridge/snc_play_cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.errors import CodecError

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
    dec.add_argument("--salvage", action="store_true",
                     help="decode a damaged file anyway: damaged spans come out silent and are listed")
    ver = actions.add_parser("verify", help="check a .snc file's integrity (exit 0 intact, 1 damaged)")
    ver.add_argument("input", type=Path)
    ver.add_argument("--json", action="store_true")
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
    if reader.manifest.integrity is None and args.snc_action in ("decode", "verify") and not \
            getattr(args, "json", False):
        print(f"scorebridge snc {args.snc_action}: note: {args.input} is a version {reader.manifest.version} file "
              "without per-block checksums: damage inside a lossy block cannot be detected", file=sys.stderr)
    if args.snc_action == "decode":
        paths, damage = reader.decode_to_dir(args.output, salvage=args.salvage)
        for path in paths:
            print(path)
        for item in damage:
            print(f"scorebridge snc decode: salvaged: missing (silent) {_describe(item)}", file=sys.stderr)
        return 0
    if args.snc_action == "verify":
        result = reader.verify()
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        elif result["intact"]:
            checks = "per-block CRC32" if result["integrity"].startswith("crc32") else "container structure"
            print(f"{args.input}: intact ({checks}, every track decoded"
                  f"{', PCM hashes match' if result['pcm_hashes_checked'] else ''})")
        else:
            print(f"{args.input}: damaged")
            for item in result["damage"]:
                print(f"  {_describe_dict(item)}")
        return 0 if result["intact"] else 1
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


def _describe_dict(item: dict) -> str:
    what = "every track" if item["track"] < 0 else f"track {item['track']} ({item['name']})"
    return f"{what} {item['start_s']:.3f}-{item['end_s']:.3f} s: {item['problem']}"


def _describe(damage) -> str:  # (a Damage; engines.snc is imported lazily)
    return _describe_dict(vars(damage))
