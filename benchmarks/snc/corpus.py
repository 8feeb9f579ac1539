"""Builds the SNC benchmark corpus on this machine: scores from music21's corpus, each part
rendered by FluidSynth with Debian's General MIDI soundfont as its own stem (48 kHz stereo),
mixed and mastered with a real chain (pedalboard: high-pass, shelf and presence EQ, bus
compressor, make-up gain, limiter) so the mastering residual is not zero.

    .venv/bin/python benchmarks/snc/corpus.py [--out benchmarks/snc/data]

Each track folder holds master.wav, one WAV per part and track.json (piece, tempo, parts,
programs, duration). Tracks shorter than 60 s are repeated to at least 62 s; longer ones are cut at 180 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RATE = 48000
MIN_SECONDS = 62.0
MAX_SECONDS = 180.0  # long movements are cut here so the benchmark stays practical

# (name, music21 corpus path, tempo in BPM, GM programs per part, parts to keep or None)
TRACKS = [
    ("haydn-op74-1-iii", "haydn/opus74no1/movement3", 132, [40, 40, 41, 42], None),
    ("mozart-k80-i", "mozart/k80/movement1", 60, [40, 40, 41, 42], None),
    ("beethoven-op18-1-ii", "beethoven/opus18no1/movement2", 56, [40, 40, 41, 42], None),
    ("monteverdi-3-1", "monteverdi/madrigal.3.1", 76, [52, 53, 54, 52, 53], None),
    ("bach-bwv66-6-winds", "bach/bwv66.6", 66, [73, 71, 69, 70], None),
    ("bach-bwv4-8-organ", "bach/bwv4.8", 70, [19, 19, 19, 19], None),
    ("bach-bwv10-7-brass", "bach/bwv10.7", 72, [56, 60, 57, 58], None),
    ("bach-bwv13-6-strings", "bach/bwv13.6", 60, [48, 48, 41, 42], None),
    ("bach-bwv26-6-piano-bass", "bach/bwv26.6", 80, [0, 0, 0, 32], None),
    ("bach-bwv40-8-sparse", "bach/bwv40.8", 58, [73, 32], [0, 3]),
    ("monteverdi-3-2-dense", "monteverdi/madrigal.3.2", 92, [48, 52, 49, 53, 42], None),
    ("haydn-op74-1-i", "haydn/opus74no1/movement1", 120, [40, 40, 41, 42], None),
]


def part_notes(part, seconds_per_beat: float) -> list[tuple[float, float, int, int]]:
    """(start_s, end_s, pitch, velocity) of every note and chord member of a part."""
    out = []
    for element in part.flatten().notes:
        start = float(element.offset) * seconds_per_beat
        end = start + max(float(element.quarterLength), 0.125) * seconds_per_beat
        velocity = int(element.volume.velocity or 84) if element.volume is not None else 84
        for pitch in element.pitches:
            out.append((start, end, int(pitch.midi), min(127, max(30, velocity))))
    return out


def render_part(notes, program: int, length_s: float, workdir: Path, name: str) -> np.ndarray:
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    for start, end, pitch, velocity in notes:
        instrument.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    midi.instruments.append(instrument)
    mid, wav = workdir / f"{name}.mid", workdir / f"{name}.wav"
    midi.write(str(mid))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RATE), "-F", str(wav), str(SOUNDFONT), str(mid)],
                   check=True, capture_output=True)
    audio, rate = sf.read(str(wav), always_2d=True)
    if rate != RATE:
        raise RuntimeError(f"fluidsynth rendered at {rate} Hz, not {RATE}")
    frames = int(length_s * RATE)
    if audio.shape[0] < frames:
        audio = np.concatenate([audio, np.zeros((frames - audio.shape[0], audio.shape[1]))])
    return audio[:frames]


def master_chain(mix: np.ndarray) -> np.ndarray:
    from pedalboard import (
        Compressor,
        Gain,
        HighpassFilter,
        HighShelfFilter,
        Limiter,
        LowShelfFilter,
        PeakFilter,
        Pedalboard,
    )

    board = Pedalboard([
        HighpassFilter(cutoff_frequency_hz=30),
        LowShelfFilter(cutoff_frequency_hz=120, gain_db=2.0),
        PeakFilter(cutoff_frequency_hz=3000, gain_db=1.5, q=0.8),
        HighShelfFilter(cutoff_frequency_hz=9000, gain_db=1.0),
        Compressor(threshold_db=-20, ratio=3.0, attack_ms=10, release_ms=120),
        Gain(gain_db=4.0),
        Limiter(threshold_db=-1.0, release_ms=80),
    ])
    return board(mix.T.astype(np.float32), RATE).T.astype(np.float64)


def build_track(name: str, work: str, tempo: float, programs: list[int], keep, out_dir: Path) -> dict:
    from music21 import corpus

    score = corpus.parse(work)
    parts = list(score.parts)
    if keep is not None:
        parts = [parts[i] for i in keep]
    seconds_per_beat = 60.0 / tempo
    score_s = float(score.highestTime) * seconds_per_beat
    repeats = max(1, int(np.ceil(MIN_SECONDS / max(score_s, 1e-6))))
    length_s = min(repeats * score_s, MAX_SECONDS) + 1.5
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    stems = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, part in enumerate(parts):
            base = part_notes(part, seconds_per_beat)
            notes = [(s + r * score_s, e + r * score_s, p, v) for r in range(repeats) for s, e, p, v in base
                     if s + r * score_s < length_s - 1.5]
            label = f"{index + 1}-{(part.partName or 'part').strip().lower().replace(' ', '-')}"[:40]
            stems[label] = render_part(notes, programs[index % len(programs)], length_s, Path(tmp), label)
    mix = np.sum(list(stems.values()), axis=0)
    headroom = 0.5 / max(np.abs(mix).max(), 1e-9)  # the mix bus at -6 dBFS peak before mastering
    stems = {k: v * headroom for k, v in stems.items()}
    master = master_chain(mix * headroom)
    for label, audio in stems.items():
        sf.write(folder / f"{label}.wav", np.clip(audio, -1, 1 - 2 ** -15), RATE, subtype="PCM_16")
    sf.write(folder / "master.wav", np.clip(master, -1, 1 - 2 ** -15), RATE, subtype="PCM_16")
    meta = {"name": name, "work": work, "tempo_bpm": tempo, "repeats": repeats, "duration_s": round(length_s, 2),
            "stems": list(stems), "programs": programs[: len(stems)]}
    (folder / "track.json").write_text(json.dumps(meta, indent=2))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/snc/data")
    parser.add_argument("--only", help="comma-separated track names")
    args = parser.parse_args()
    if not SOUNDFONT.exists():
        sys.exit(f"{SOUNDFONT} missing: apt-get install fluid-soundfont-gm")
    chosen = [t for t in TRACKS if not args.only or t[0] in args.only.split(",")]
    for index, (name, work, tempo, programs, keep) in enumerate(chosen):
        meta = build_track(name, work, tempo, programs, keep, args.out)
        print(f"[{index + 1}/{len(chosen)}] {name}: {len(meta['stems'])} stems, {meta['duration_s']} s", flush=True)


if __name__ == "__main__":
    main()
