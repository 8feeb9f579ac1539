"""Stems with FluidSynth, then the mix and the master (numpy + scipy).

Each stem is its part's MIDI (``midi.stem_midi``) rendered by the ``fluidsynth`` program at
48 kHz stereo with the SoundFont (Debian's FluidR3 GM by default), cut or padded to the video's
length with a short fade at the end, and stored as 24-bit FLAC. The mix is the plain sum of the
stems (the balance is in the MIDI: CC7 per part); the master brings the mix to ``TARGET_LUFS``
integrated (one gain for the whole piece, so quiet scenes stay quiet) and a peak limiter holds
it under ``CEILING_DBFS``. The limiter is the only non-linear step: what it takes off is what the
SNC file's mastering residual stores.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.ndimage import maximum_filter1d

from core.errors import BackendError, ConfigError
from engines.snc.loudness import LoudnessMeter

__all__ = ["CEILING_DBFS", "DEFAULT_SOUNDFONT", "RATE", "TARGET_LUFS", "check_soundfont", "master",
           "render_stems"]

RATE = 48000
TARGET_LUFS = -16.0
CEILING_DBFS = -1.0
FADE_S = 0.5
SYNTH_GAIN = 0.4
RENDER_TIMEOUT_S = 600
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def check_soundfont(path: Path) -> Path:
    """A readable SoundFont 2 file (RIFF ... sfbk), or ConfigError naming the problem."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except FileNotFoundError:
        raise ConfigError(f"--soundfont {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--soundfont {path}: cannot read ({exc.strerror or exc})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise ConfigError(f"--soundfont {path}: not a SoundFont 2 file (.sf2)")
    return path


def _render_one(midi_path: Path, soundfont: Path, stem_path: Path, frames: int) -> None:
    raw = stem_path.with_suffix(".fluidsynth.wav")
    command = ["fluidsynth", "-ni", "-q", "-g", str(SYNTH_GAIN), "-r", str(RATE), "-o", "audio.file.format=float",
               "-o", "synth.cpu-cores=1", "-o", "synth.dynamic-sample-loading=1",  # loads only the samples played
               "-F", str(raw), str(soundfont), str(midi_path)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=RENDER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BackendError("fluidsynth is not installed (Debian: apt install fluidsynth)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"fluidsynth did not finish {midi_path.name} in {RENDER_TIMEOUT_S} s") from None
    if done.returncode != 0 or not raw.exists():
        message = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise BackendError(f"fluidsynth failed on {midi_path.name}: {message[-1] if message else done.returncode}")
    audio, rate = sf.read(str(raw), dtype="float64", always_2d=True)
    raw.unlink()
    if rate != RATE:
        raise BackendError(f"fluidsynth rendered {midi_path.name} at {rate} Hz, not {RATE}")
    audio = audio[:frames]
    if audio.shape[0] < frames:
        audio = np.concatenate([audio, np.zeros((frames - audio.shape[0], audio.shape[1]))])
    fade = min(frames, int(FADE_S * RATE))
    audio[frames - fade:] *= np.linspace(1.0, 0.0, fade)[:, None]
    sf.write(str(stem_path), np.clip(audio, -1.0, 1.0 - 2 ** -23), RATE, subtype="PCM_24")


def render_stems(midi_paths: dict[str, Path], soundfont: Path, folder: Path, duration_s: float,
                 workers: int = 2) -> dict[str, Path]:
    """Render every stem (``workers`` FluidSynth processes at a time) to ``folder/NAME.flac``."""
    if shutil.which("fluidsynth") is None:
        raise BackendError("fluidsynth is not installed (Debian: apt install fluidsynth)")
    frames = round(duration_s * RATE)
    outputs = {name: folder / f"{name}.flac" for name in midi_paths}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [pool.submit(_render_one, midi_paths[name], soundfont, outputs[name], frames) for name in midi_paths]
        for job in jobs:
            job.result()
    return outputs


def _limit(audio: np.ndarray, ceiling: float) -> np.ndarray:
    """A peak limiter on 1 ms blocks: a +-2 ms look-around peak, an instant attack, an 80 ms
    release, the gain interpolated between blocks; a clip at the ceiling catches what is left."""
    block = RATE // 1000
    count = -(-audio.shape[0] // block)
    peak = np.zeros(count * block)
    peak[: audio.shape[0]] = np.abs(audio).max(axis=1)
    wanted = np.minimum(1.0, ceiling / np.maximum(maximum_filter1d(peak.reshape(count, block).max(1), 5), 1e-12))
    release = float(np.exp(-1.0 / 80.0))
    gain = np.empty(count)
    level = 1.0
    for index, target in enumerate(wanted.tolist()):
        level = target if target < level else target + (level - target) * release
        gain[index] = level
    centres = np.arange(count) * block + block / 2
    per_sample = np.interp(np.arange(audio.shape[0]), centres, gain)
    return np.clip(audio * per_sample[:, None], -ceiling, ceiling)


def master(stems: dict[str, Path], output: Path) -> dict[str, float]:
    """Sum the stems, bring the sum to the target loudness, limit it; write ``output`` (24-bit,
    WAV or FLAC by its suffix).
    Returns the loudness before and after and the gain."""
    mix = None
    for path in stems.values():
        audio, _ = sf.read(str(path), dtype="float64", always_2d=True)
        mix = audio if mix is None else mix + audio
    meter = LoudnessMeter(RATE, mix.shape[1])
    meter.push(mix)
    before = meter.integrated()
    gain_db = 0.0 if before is None else TARGET_LUFS - before
    ceiling = 10 ** (CEILING_DBFS / 20)
    mastered = _limit(mix * 10 ** (gain_db / 20), ceiling)
    sf.write(str(output), mastered, RATE, subtype="PCM_24")
    after = LoudnessMeter(RATE, mastered.shape[1])
    after.push(mastered)
    return {"mix_lufs": before if before is not None else float("-inf"), "gain_db": gain_db,
            "master_lufs": after.integrated() or float("-inf"),
            "peak_dbfs": float(20 * np.log10(max(np.abs(mastered).max(), 1e-12)))}
