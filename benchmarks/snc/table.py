"""Markdown tables for BENCHMARKS.md from bench_snc.py results.

    .venv/bin/python benchmarks/snc/table.py RESULT.json [MORE.json ...] [--merge-out MERGED.json]

Sizes are summed over the tracks (total bytes / total `flac -8` bytes) and also given per track
as the worst (largest) ratio; quality is the mean and the worst track; speeds the slowest track.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["merge", "speed_table", "summary_table", "track_table"]

LAYOUTS = [("snc_lossless", "SNC lossless"), ("snc_transparent", "SNC transparent"), ("snc_compact", "SNC compact"),
           ("snc_transparent_gain_only", "SNC transparent, gain-only mastering model"),
           ("opus_master_same_bitrate", "Opus master alone, transparent's bitrate"),
           ("ni_stems_like", "NI-Stems-like: master + 4 stem groups, Opus 128 kb/s each")]


def _fmt(values: list[float], digits: int, worst=min) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):.{digits}f} ({worst(values):.{digits}f})"


def summary_table(data: dict) -> str:
    tracks = data["tracks"]
    flac = sum(t["flac_master_bytes"] for t in tracks)
    rows = ["| Layout | size vs `flac -8` (total; worst track) | ViSQOL MOS-LQO mean (worst) | STOI mean (worst) "
            "| SI-SDR master dB mean (worst) | stem SI-SDR dB mean (worst) | encode x RT CPU (slowest) "
            "| decode x RT CPU (slowest) |",
            "|---|---|---|---|---|---|---|---|",
            "| FLAC master (`flac -8`) | 1.000 | lossless | lossless | lossless | - | - | - |"]
    for key, label in LAYOUTS:
        entries = [t[key] for t in tracks if key in t]
        if not entries:
            continue
        size = sum(e["bytes"] for e in entries) / sum(t["flac_master_bytes"] for t in tracks if key in t)
        worst = max(e["vs_flac_master"] for e in entries)
        stems = [v for e in entries for v in (e.get("stem_si_sdr_db") or {}).values()] if isinstance(
            entries[0].get("stem_si_sdr_db"), dict) else [v for e in entries for v in e.get("stem_si_sdr_db", [])]
        if key == "snc_lossless":
            exact = all(e.get("bit_exact_master") and e.get("bit_exact_stems", True) for e in entries)
            quality = ["bit-exact" if exact else "NOT bit-exact"] * 3 + ["bit-exact" if exact else "-"]
        else:
            quality = [_fmt([e["visqol_moslqo"] for e in entries if "visqol_moslqo" in e], 3),
                       _fmt([e["stoi"] for e in entries], 4), _fmt([e["si_sdr_db"] for e in entries], 1),
                       _fmt(stems, 1)]
        speeds = [f"{min(e[k] for e in entries):.1f}x" if k in entries[0] else "-"
                  for k in ("encode_x_realtime_cpu", "decode_x_realtime_cpu")]
        rows.append(f"| {label} | {size:.3f}; {worst:.3f} | " + " | ".join(quality) + " | " + " | ".join(speeds) + " |")
    rows.append(f"\n{len(tracks)} tracks, {sum(t['duration_s'] for t in tracks):.0f} s of audio, "
                f"`flac -8` masters {flac:,} bytes.")
    return "\n".join(rows)


def track_table(data: dict, key: str = "snc_transparent") -> str:
    rows = ["| Track | s | stems | FLAC kb/s | SNC kb/s | vs FLAC | ViSQOL | STOI | model SNR dB (gain only) "
            "| residual kb/s (gain only) | enc x CPU | dec x CPU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in data["tracks"]:
        e = t.get(key)
        if not e:
            continue
        g = t.get("snc_transparent_gain_only", {})
        flac_kbps = t["flac_master_bytes"] * 8 / t["duration_s"] / 1000
        rows.append(f"| {t['track']} | {t['duration_s']:.0f} | {t['stems']} | {flac_kbps:.0f} | {e['kbps']:.0f} "
                    f"| {e['vs_flac_master']:.3f} | {e.get('visqol_moslqo', '-')} | {e['stoi']} "
                    f"| {e['model_snr_db']} ({g.get('model_snr_db', '-')}) "
                    f"| {e['residual_bitrate_bps'] // 1000} ({(g.get('residual_bitrate_bps') or 0) // 1000 or '-'}) "
                    f"| {e['encode_x_realtime_cpu']} | {e['decode_x_realtime_cpu']} |")
    return "\n".join(rows)


def speed_table(data: dict, modes: tuple[str, ...] = ("transparent", "compact", "lossless")) -> str:
    """Per track and mode: encode / decode x real time (CPU time, one core), with the load."""
    rows = ["| Track | stems | " + " | ".join(f"{m} encode / decode x RT" for m in modes) + " | load (1 min) |",
            "|---|---|" + "---|" * len(modes) + "---|"]
    for t in data["tracks"]:
        cells = [f"{t[f'snc_{m}']['encode_x_realtime_cpu']}x / {t[f'snc_{m}']['decode_x_realtime_cpu']}x"
                 if f"snc_{m}" in t else "-" for m in modes]
        load = f"{t['load_before'][0]}-{t['load_after'][0]}" if "load_after" in t else "-"
        rows.append(f"| {t['track']} | {t['stems']} | " + " | ".join(cells) + f" | {load} |")
    return "\n".join(rows)


def merge(paths: list[Path]) -> dict:
    """Several result files (parts of one corpus run) as one: tracks by name, first wins."""
    parts = [json.loads(p.read_text()) for p in paths]
    merged = {**parts[0], "command": [p["command"] for p in parts], "date": [p["date"] for p in parts], "tracks": []}
    seen = set()
    for part in parts:
        for track in part["tracks"]:
            if track["track"] not in seen:
                seen.add(track["track"])
                merged["tracks"].append(track)
    merged["tracks"].sort(key=lambda t: t["track"])
    return merged


def main() -> None:
    """table.py RESULT.json [MORE.json ...] [--merge-out MERGED.json]"""
    args = sys.argv[1:]
    out = None
    if "--merge-out" in args:
        index = args.index("--merge-out")
        out = Path(args[index + 1])
        args = args[:index] + args[index + 2:]
    data = merge([Path(a) for a in args])
    if out is not None:
        out.write_text(json.dumps(data, indent=2))
    print(summary_table(data))
    print()
    print(track_table(data))
    print()
    print(speed_table(data))


if __name__ == "__main__":
    main()
