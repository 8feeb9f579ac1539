"""SNC size, quality and speed on the benchmark corpus (benchmarks/snc/corpus.py builds it).

    .venv/bin/python benchmarks/snc/bench_snc.py [--data DIR] [--tracks a,b] [--modes m1,m2] [--no-visqol]

For every track: `flac -8` of the master (the reference size); each SNC mode (size; encode and
decode speed as multiples of real time, from this process's CPU time, i.e. one core, and from
the wall clock; STOI (whole track) and ViSQOL audio-mode MOS-LQO (first --visqol-seconds, 30 by
default: pure-Python ViSQOL takes minutes per track) of the reconstructed master; SI-SDR of the
master and of each stem); ``transparent_gain_only`` is transparent mode with the mastering
model cut down to a per-channel gain (what the FIR + envelope model saves); Opus of the master
alone at the same total bitrate as transparent SNC; an NI-Stems-like layout (the master + up to
4 stem groups, each Opus 128 kb/s). Results (rewritten after every track): --out, default
benchmarks/results/snc.json; benchmarks/snc/table.py turns them into the BENCHMARKS.md table.
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

from engines.snc import SncReader, encode
from engines.snc.avio import TrackWriter, decode_blocks


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


def _timed(function):
    """(result, CPU seconds of this process, wall seconds): the codec runs on one thread, so
    CPU time is its one-core cost even when other jobs share the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _speed(duration: float, cpu: float, wall: float, what: str) -> dict:
    return {f"{what}_x_realtime_cpu": round(duration / max(cpu, 1e-9), 1),
            f"{what}_x_realtime_wall": round(duration / max(wall, 1e-9), 1)}


MODES = (("lossless", "lossless", "fir-envelope"), ("transparent", "transparent", "fir-envelope"),
         ("compact", "compact", "fir-envelope"), ("transparent_gain_only", "transparent", "gain"))


def bench_track(folder: Path, with_visqol: bool, modes: list[str], references: bool = True,
                visqol_seconds: float = 30.0) -> dict:
    meta = json.loads((folder / "track.json").read_text())
    master_path = folder / "master.wav"
    stems = {name: folder / f"{name}.wav" for name in meta["stems"]}
    master, rate = sf.read(master_path, always_2d=True)
    originals = {n: sf.read(p, always_2d=True)[0] for n, p in stems.items()}
    originals = {n: a.repeat(master.shape[1] // a.shape[1], axis=1) for n, a in originals.items()}
    duration = master.shape[0] / rate
    result: dict = {"track": meta["name"], "duration_s": round(duration, 2), "stems": len(stems),
                    "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        flac = Path(tmp) / "master.flac"
        subprocess.run(["flac", "-8", "-s", "-f", "-o", str(flac), str(master_path)], check=True)
        flac_bytes = flac.stat().st_size
        result["flac_master_bytes"] = flac_bytes

        def quality(estimate: np.ndarray, visqol: bool = True) -> dict:
            out = {"stoi": round(stoi(master, estimate, rate), 4), "si_sdr_db": round(si_sdr(master, estimate), 2)}
            if with_visqol and visqol:
                cut = master.shape[0] if visqol_seconds <= 0 else int(visqol_seconds * rate)
                out["visqol_moslqo"] = round(visqol_mos(master[:cut], estimate[:cut], rate), 3)
            return out

        for label, mode, mastering in MODES:
            if label not in modes:
                continue
            out = Path(tmp) / f"{label}.snc"
            manifest, cpu, wall = _timed(lambda: encode(master_path, stems, out, mode, mastering))
            reader = SncReader(out)
            blocks, dcpu, dwall = _timed(lambda: list(reader.blocks()))
            decoded = {k: np.concatenate([b[k] for b in blocks]).astype(np.float64) for k in blocks[0]}
            del blocks
            entry = {"bytes": out.stat().st_size, "vs_flac_master": round(out.stat().st_size / flac_bytes, 3),
                     "kbps": round(out.stat().st_size * 8 / duration / 1000, 1),
                     **_speed(duration, cpu, wall, "encode"), **_speed(duration, dcpu, dwall, "decode"),
                     "stem_si_sdr_db": {n: round(si_sdr(originals[n], decoded[n]), 2) for n in stems},
                     "stem_bitrate_bps": {s.name: s.bitrate_bps for s in manifest.stems},
                     "residual_bitrate_bps": manifest.residual["bitrate_bps"],
                     "residual_rms_dbfs": manifest.residual["rms_dbfs"],
                     "model_snr_db": manifest.residual.get("model_snr_db"),
                     "master_snr_db": manifest.residual.get("master_snr_db"),
                     "probe_snr_db": manifest.residual.get("probe_snr_db"), "mastering": manifest.mastering["model"]}
            if mode == "lossless":
                ref_int, _ = sf.read(master_path, dtype="int16", always_2d=True)
                exact = np.concatenate([b["master"] for b in reader.blocks(integer=True)])
                entry["bit_exact_master"] = bool(np.array_equal(exact, ref_int.astype(np.int64)))
                entry["bit_exact_stems"] = all(
                    np.array_equal(np.concatenate([b[n] for b in reader.blocks(integer=True)]),
                                   sf.read(p, dtype="int16", always_2d=True)[0].repeat(
                                       master.shape[1] // sf.info(p).channels, axis=1).astype(np.int64))
                    for n, p in stems.items())
            else:
                entry.update(quality(decoded["master"], visqol=label != "transparent_gain_only"))
            result[f"snc_{label}"] = entry
            print(f"  {meta['name']} {label}: {json.dumps(entry)}", flush=True)
        if not references:
            result["load_after"] = [round(x, 2) for x in os.getloadavg()]
            return result
        if "transparent" in modes:
            total_bps = int(result["snc_transparent"]["bytes"] * 8 / duration)
            decoded, size = opus_roundtrip(master, rate, min(total_bps, 510000), Path(tmp) / "opus.mka")
            result["opus_master_same_bitrate"] = {"bitrate_bps": min(total_bps, 510000), "bytes": size,
                                                  "vs_flac_master": round(size / flac_bytes, 3), **quality(decoded)}
        groups = list(originals.values())
        grouped = groups[:3] + ([np.sum(groups[3:], axis=0)] if len(groups) > 3 else [])
        decoded_master, ni_bytes = opus_roundtrip(master, rate, 128000, Path(tmp) / "ni-master.mka")
        stem_sdr = []
        for index, stem in enumerate(grouped):
            decoded_stem, size = opus_roundtrip(stem, rate, 128000, Path(tmp) / f"ni{index}.mka")
            ni_bytes += size
            stem_sdr.append(round(si_sdr(stem, decoded_stem), 2))
        result["ni_stems_like"] = {"layout": f"master + {len(grouped)} stem groups, Opus 128 kb/s each",
                                   "bytes": ni_bytes, "vs_flac_master": round(ni_bytes / flac_bytes, 3),
                                   "stem_si_sdr_db": stem_sdr, **quality(decoded_master)}
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks/snc/data")
    parser.add_argument("--tracks", help="comma-separated names (default: all built)")
    parser.add_argument("--no-visqol", action="store_true")
    parser.add_argument("--no-references", action="store_true", help="skip the Opus-master and NI-like layouts")
    parser.add_argument("--visqol-seconds", type=float, default=30.0,
                        help="ViSQOL on the first N seconds of each track (0: the whole track)")
    parser.add_argument("--modes", default=",".join(m[0] for m in MODES),
                        help="comma-separated: " + ", ".join(m[0] for m in MODES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/snc.json")
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.data.glob("*/track.json"))
    if args.tracks:
        folders = [f for f in folders if f.name in args.tracks.split(",")]
    if not folders:
        sys.exit("no corpus tracks: run benchmarks/snc/corpus.py first")
    results = {"command": " ".join(["benchmarks/snc/bench_snc.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
               "cpu": _cpu_name(), "tracks": []}
    for folder in folders:
        results["tracks"].append(bench_track(folder, not args.no_visqol, args.modes.split(","), not args.no_references,
                                             args.visqol_seconds))
        print(json.dumps(results["tracks"][-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))  # after every track: a partial run still counts
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
