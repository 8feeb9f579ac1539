"""The SNC encoder: stems + a mastering residual in one Matroska file.

Passes, each block by block so memory stays bounded:
  A  measure: per-channel least-squares gain of the master against the sum of the stems
     (the parametric mastering model), stem activity for bitrates, PCM hashes;
  B  encode each stem to its own temporary track (FLAC 24-bit or Opus at a chosen bitrate);
  C  decode those tracks again and code the residual = master - model(sum of DECODED stems)
     (closed loop, so the reader reconstructs the master from exactly what it decodes);
  D  merge the tracks without re-encoding into one file written to a temporary name and
     renamed into place (atomic: no half-written .snc ever exists).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from bridge.errors import CodecError
from engines.snc.avio import TrackWriter, decode_blocks, merge_tracks
from engines.snc.manifest import LIMITS, MODES, Manifest, StemInfo
from engines.snc.pcm import INT_SCALE, InputTrack

__all__ = ["encode", "BITRATES"]

BLOCK_FRAMES = 48000
# Opus bitrates for an active stereo track (mono gets 60%); near-silent tracks get the floor.
BITRATES = {"transparent": {"stem": 128000, "residual": 48000, "floor": 8000},
            "compact": {"stem": 64000, "residual": 16000, "floor": 6000}}
_ROLE_HINTS = {"vocal": "vocals", "voice": "vocals", "soprano": "vocals", "drum": "drums", "perc": "drums",
               "bass": "bass", "piano": "keys", "key": "keys", "organ": "keys", "guitar": "guitar"}


def _role(name: str) -> str:
    lowered = name.lower()
    return next((role for hint, role in _ROLE_HINTS.items() if hint in lowered), "other")


def _check_inputs(master: InputTrack, stems: list[InputTrack], mode: str) -> None:
    for track in stems:
        if track.sample_rate != master.sample_rate:
            raise CodecError(f"stem {track.name!r} is {track.sample_rate} Hz but the master is "
                             f"{master.sample_rate} Hz; resample it first (e.g. sox in.wav -r "
                             f"{master.sample_rate} out.wav)")
        if track.channels not in (1, master.channels):
            raise CodecError(f"stem {track.name!r} has {track.channels} channels; the master has "
                             f"{master.channels} (mono stems are spread to every channel)")
        if track.frames > master.frames:
            raise CodecError(f"stem {track.name!r} is longer than the master ({track.frames} > "
                             f"{master.frames} frames); trim it or extend the master")
    if master.sample_rate not in LIMITS["sample_rates"]:
        raise CodecError(f"master sample rate {master.sample_rate} is not one of {LIMITS['sample_rates']}")
    if mode != "lossless" and master.sample_rate != 48000:
        raise CodecError(f"{mode} mode codes Opus at 48 kHz; the master is {master.sample_rate} Hz "
                         "(resample to 48 kHz, or use --mode lossless)")
    if mode == "lossless" and (master.sample_format == "float" or any(s.sample_format == "float" for s in stems)):
        raise CodecError("lossless mode needs 16- or 24-bit PCM inputs (found floating point)")
    if master.frames > LIMITS["max_duration_s"] * master.sample_rate:
        raise CodecError(f"the master is longer than the limit of {LIMITS['max_duration_s']} s")
    if not 1 <= len(stems) <= LIMITS["max_stems"]:
        raise CodecError(f"{len(stems)} stems is outside 1..{LIMITS['max_stems']}")


def _measure(master: InputTrack, stems: list[InputTrack], integer: bool, scale: float) -> dict:
    """Pass A: mastering gain per channel, stem activity, PCM hashes."""
    channels, frames = master.channels, master.frames
    cross = np.zeros(channels)
    power = np.zeros(channels)
    active = np.zeros(len(stems))
    blocks = 0
    digests = [hashlib.sha256() for _ in range(len(stems) + 1)]
    readers = [t.blocks(BLOCK_FRAMES, channels, frames, integer) for t in [master, *stems]]
    for parts in zip(*readers):
        for digest, part in zip(digests, parts):
            digest.update(np.ascontiguousarray(part, dtype=np.int32 if integer else np.float32).tobytes())
        mix = np.sum([p.astype(np.float64) for p in parts[1:]], axis=0)
        cross += np.sum(parts[0].astype(np.float64) * mix, axis=0)
        power += np.sum(mix * mix, axis=0)
        for index, part in enumerate(parts[1:]):
            rms = np.sqrt(np.mean((part.astype(np.float64) / scale) ** 2))
            active[index] += rms > 10 ** (-50 / 20)
        blocks += 1
    gain = np.where(power > 0, cross / np.maximum(power, 1e-30), 0.0)
    return {"gain": gain, "activity": active / max(blocks, 1), "digests": [d.hexdigest() for d in digests]}


def _bitrate(mode: str, channels: int, activity: float, track: str) -> int:
    table = BITRATES[mode]
    base = table[track] * (1.0 if channels == 2 else 0.6)
    if activity <= 0.0:
        return table["floor"]
    return int(max(table["floor"], round(base * max(activity, 0.25) / 1000) * 1000))


def _loudness(path: Path, rate: int) -> float | None:
    """EBU R128 integrated loudness (pyloudnorm) of tracks up to 20 minutes."""
    import pyloudnorm
    import soundfile as sf

    info = sf.info(str(path))
    if info.frames > 20 * 60 * rate:
        return None
    data, _ = sf.read(str(path), always_2d=True)
    value = float(pyloudnorm.Meter(rate).integrated_loudness(data))
    return round(value, 2) if np.isfinite(value) else None


def encode(master_path: Path, stem_paths: dict[str, Path], out_path: Path, mode: str = "transparent") -> Manifest:
    """Encode ``master_path`` and its stems into ``out_path``; returns the manifest written."""
    if mode not in MODES:
        raise CodecError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if not stem_paths:
        raise CodecError("an SNC file needs at least one stem (--stem NAME=FILE)")
    master = InputTrack(Path(master_path), "master")
    stems = [InputTrack(Path(p), name) for name, p in stem_paths.items()]
    infos = [StemInfo(name=name, role=_role(name)) for name in stem_paths]
    for index, info in enumerate(infos):
        info.validate(f"stem #{index + 1}")
    _check_inputs(master, stems, mode)
    lossless = mode == "lossless"
    scale = INT_SCALE[master.sample_format] if lossless else 1.0
    channels, frames, rate = master.channels, master.frames, master.sample_rate
    measured = _measure(master, stems, lossless, scale)
    gain = measured["gain"]
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".snc-") as tmp:
        stem_files = []
        for index, (track, info) in enumerate(zip(stems, infos)):
            info.codec = "flac" if lossless else "opus"
            info.bitrate_bps = None if lossless else _bitrate(mode, channels, float(measured["activity"][index]), "stem")
            info.sha256_pcm = measured["digests"][index + 1]
            path = Path(tmp) / f"stem{index}.mka"
            writer = TrackWriter(path, info.codec, rate, channels, info.bitrate_bps)
            for block in track.blocks(BLOCK_FRAMES, channels, frames, lossless):
                writer.write(block)
            writer.close()
            stem_files.append(path)
        residual_path = Path(tmp) / "residual.mka"
        residual_bitrate = None if lossless else _bitrate(mode, channels, 1.0, "residual")
        writer = TrackWriter(residual_path, "flac" if lossless else "opus", rate, channels, residual_bitrate)
        decoded = [decode_blocks(p, 0, BLOCK_FRAMES, frames, lossless) for p in stem_files]
        energy = 0.0
        for master_block, *stem_blocks in zip(master.blocks(BLOCK_FRAMES, channels, frames, lossless), *decoded):
            prediction = predict(stem_blocks, gain, lossless)
            residual = master_block.astype(np.float64 if not lossless else np.int64) - prediction
            if lossless and np.abs(residual).max(initial=0) >= 2 ** 23:
                raise CodecError("the residual does not fit 24 bits: the stems do not add up to the master")
            energy += float(np.sum((residual / scale) ** 2))
            writer.write(residual)
        writer.close()
        residual_gains = None if lossless else _residual_gains(master, stem_files, residual_path, gain, frames, channels)
        residual_rms_db = 10 * np.log10(max(energy / max(frames * channels, 1), 1e-20))
        manifest = Manifest(
            mode=mode, sample_rate=rate, channels=channels, frames=frames,
            sample_format=master.sample_format if lossless else "float",
            stems=infos,
            residual={"codec": "flac" if lossless else "opus", "bitrate_bps": residual_bitrate,
                      "rms_dbfs": round(float(residual_rms_db), 2), "gain_block_frames": BLOCK_FRAMES,
                      "gains": residual_gains},
            mastering={"model": "gain", "gain_per_channel": [float(g) for g in gain]},
            contexts=_default_contexts(infos),
            master_sha256_pcm=measured["digests"][0],
        )
        manifest.loudness_lufs = {"master": _loudness(master.path, rate),
                                  **{t.name: _loudness(t.path, rate) for t in stems}}
        for info in infos:
            info.loudness_lufs = manifest.loudness_lufs.get(info.name)
        manifest.validate("encoder")
        partial = Path(tmp) / "out.snc"
        merge_tracks([(residual_path, "residual"), *[(p, i.name) for p, i in zip(stem_files, infos)]], partial,
                     {"SNC_MANIFEST": manifest.to_json(), "SNC_VERSION": str(manifest.version)})
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, out_path)
    return manifest


def _residual_gains(master: InputTrack, stem_files: list[Path], residual_path: Path, gain: np.ndarray,
                    frames: int, channels: int) -> list[list[float]]:
    """Per block and channel, the gain in 0..1 that makes the DECODED residual remove the most
    error. A low-bitrate lossy residual of noise-like error can add more (uncorrelated) energy
    than it removes; its gain then goes to 0 for that block."""
    decoded = [decode_blocks(p, 0, BLOCK_FRAMES, frames, False) for p in stem_files]
    residuals = decode_blocks(residual_path, 0, BLOCK_FRAMES, frames, False)
    gains = []
    for master_block, coded, *stem_blocks in zip(master.blocks(BLOCK_FRAMES, channels, frames, False), residuals,
                                                  *decoded):
        target = master_block - predict(stem_blocks, gain, False)
        power = np.sum(coded * coded, axis=0)
        best = np.where(power > 0, np.sum(target * coded, axis=0) / np.maximum(power, 1e-30), 0.0)
        gains.append([round(float(g), 3) for g in np.clip(best, 0.0, 1.0)])
    return gains


def predict(stem_blocks: list[np.ndarray], gain: np.ndarray, integer: bool) -> np.ndarray:
    """The mastering model applied to the sum of decoded stems; in integer (lossless) mode
    rounded so the reader reproduces it exactly."""
    mix = np.sum([b.astype(np.float64) for b in stem_blocks], axis=0) * gain
    return np.rint(mix).astype(np.int64) if integer else mix


def _default_contexts(stems: list[StemInfo]) -> dict[str, dict]:
    vocals = [s.name for s in stems if s.role == "vocals"]
    contexts: dict[str, dict] = {}
    if vocals:
        contexts["karaoke"] = {"gains_db": {name: -96.0 for name in vocals}}
        contexts["focus"] = {"gains_db": {name: -12.0 for name in vocals}}
    return contexts
