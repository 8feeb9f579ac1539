"""SNC size, quality and speed on the benchmark corpus (benchmarks/snc/corpus.py builds it).

    .venv/bin/python benchmarks/snc/bench_snc.py [--tracks a,b] [--no-visqol]

For every track: `flac -8` of the master (the reference size); each SNC mode (size, encode and
decode speed as multiples of real time, STOI and ViSQOL audio-mode MOS-LQO of the reconstructed
master, SI-SDR of the master and of each stem); Opus of the master alone at the same total
bitrate as transparent SNC; an NI-Stems-like layout (master + 4 stem groups, each Opus at the
transparent stem bitrate). Results: benchmarks/results/snc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engines.snc import SncReader, encode  # noqa: E402
from engines.snc.avio import TrackWriter, decode_blocks  # noqa: E402


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = reference.reshape(-1) - reference.mean()
    est = estimate.reshape(-1) - estimate.mean()
    scale = np.dot(est, ref) / max(np.dot(ref, ref), 1e-20)
    target = scale * ref
    noise = est - target
    return float(10 * np.log10(max(np.dot(target, target), 1e-20) / max(np.dot(noise, noise), 1e-20)))


def stoi(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    from pystoi import stoi as pystoi

    return float(pystoi(reference.mean(axis=1), estimate.mean(axis=1), rate, extended=False))


def visqol_mos(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="audio")
    with tempfile.TemporaryDirectory() as tmp:
        ref, deg = Path(tmp) / "ref.wav", Path(tmp) / "deg.wav"
        sf.write(ref, reference, rate, subtype="FLOAT")
        sf.write(deg, estimate, rate, subtype="FLOAT")
        return float(api.measure(str(ref), str(deg)).moslqo)


def opus_roundtrip(audio: np.ndarray, rate: int, bitrate: int, path: Path) -> tuple[np.ndarray, int]:
    writer = TrackWriter(path, "opus", rate, audio.shape[1], bitrate)
    for start in range(0, audio.shape[0], 48000):
        writer.write(audio[start:start + 48000])
    writer.close()
    decoded = np.concatenate(list(decode_blocks(path, 0, 48000, audio.shape[0], False)))
    return decoded, path.stat().st_size


def bench_track(folder: Path, with_visqol: bool) -> dict:
    meta = json.loads((folder / "track.json").read_text())
    master_path = folder / "master.wav"
    stems = {name: folder / f"{name}.wav" for name in meta["stems"]}
    master, rate = sf.read(master_path, always_2d=True)
    duration = master.shape[0] / rate
    result: dict = {"track": meta["name"], "duration_s": round(duration, 2), "stems": len(stems)}
    with tempfile.TemporaryDirectory() as tmp:
        flac = Path(tmp) / "master.flac"
        subprocess.run(["flac", "-8", "-s", "-f", "-o", str(flac), str(master_path)], check=True)
        flac_bytes = flac.stat().st_size
        result["flac_master_bytes"] = flac_bytes

        def quality(estimate: np.ndarray) -> dict:
            out = {"stoi": round(stoi(master, estimate, rate), 4), "si_sdr_db": round(si_sdr(master, estimate), 2)}
            if with_visqol:
                out["visqol_moslqo"] = round(visqol_mos(master, estimate, rate), 3)
            return out

        for mode in ("lossless", "transparent", "compact"):
            out = Path(tmp) / f"{mode}.snc"
            started = time.perf_counter()
            encode(master_path, stems, out, mode)
            encode_s = time.perf_counter() - started
            reader = SncReader(out)
            started = time.perf_counter()
            blocks = list(reader.blocks())
            decode_s = time.perf_counter() - started
            decoded = {k: np.concatenate([b[k] for b in blocks]).astype(np.float64) for k in blocks[0]}
            entry = {"bytes": out.stat().st_size, "vs_flac_master": round(out.stat().st_size / flac_bytes, 3),
                     "encode_x_realtime": round(duration / encode_s, 1),
                     "decode_x_realtime": round(duration / decode_s, 1),
                     "stem_si_sdr_db": {n: round(si_sdr(sf.read(p, always_2d=True)[0].repeat(
                         2 // sf.info(p).channels, axis=1), decoded[n]), 2) for n, p in stems.items()}}
            if mode == "lossless":
                ref_int, _ = sf.read(master_path, dtype="int16", always_2d=True)
                exact = np.concatenate([b["master"] for b in reader.blocks(integer=True)])
                entry["bit_exact_master"] = bool(np.array_equal(exact, ref_int.astype(np.int64)))
            else:
                entry.update(quality(decoded["master"]))
            result[f"snc_{mode}"] = entry
        total_bps = int(result["snc_transparent"]["bytes"] * 8 / duration)
        decoded, size = opus_roundtrip(master, rate, min(total_bps, 510000), Path(tmp) / "opus.mka")
        result["opus_master_same_bitrate"] = {"bitrate_bps": min(total_bps, 510000), "bytes": size,
                                              "vs_flac_master": round(size / flac_bytes, 3), **quality(decoded)}
        groups = list(stems.values())
        grouped = [sf.read(p, always_2d=True)[0] for p in groups[:3]]
        rest = [sf.read(p, always_2d=True)[0] for p in groups[3:]]
        if rest:
            grouped.append(np.sum([r.repeat(2 // r.shape[1], axis=1) for r in rest], axis=0))
        ni_bytes = 0
        decoded_master, size = opus_roundtrip(master, rate, 128000, Path(tmp) / "ni-master.mka")
        ni_bytes += size
        for index, stem in enumerate(grouped):
            _, size = opus_roundtrip(stem.repeat(2 // stem.shape[1], axis=1), rate, 128000, Path(tmp) / f"ni{index}.mka")
            ni_bytes += size
        result["ni_stems_like"] = {"layout": "master + 4 stem groups, Opus 128 kb/s each", "bytes": ni_bytes,
                                   "vs_flac_master": round(ni_bytes / flac_bytes, 3), **quality(decoded_master)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks/snc/data")
    parser.add_argument("--tracks", help="comma-separated names (default: all built)")
    parser.add_argument("--no-visqol", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/snc.json")
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.data.glob("*/track.json"))
    if args.tracks:
        folders = [f for f in folders if f.name in args.tracks.split(",")]
    if not folders:
        sys.exit("no corpus tracks: run benchmarks/snc/corpus.py first")
    results = {"command": " ".join(["benchmarks/snc/bench_snc.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "tracks": []}
    for folder in folders:
        results["tracks"].append(bench_track(folder, not args.no_visqol))
        print(json.dumps(results["tracks"][-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
