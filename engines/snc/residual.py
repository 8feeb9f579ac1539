"""The lossy SNC residual: its Opus bitrate, chosen before coding it, and the closed-loop
coding itself (code, decode, per-block gains).

The bitrate is measured, not guessed: a probe codes evenly spaced excerpts of the residual
(about a tenth of it, whole gain blocks) and measures the master's SNR they would give, then
moves the bitrate by the measured slope (on the corpus every 16 kb/s of Opus residual adds
1.0 dB of master SNR, within 0.3 dB per track) to reach the mode's target. The excerpts
predict the whole file's SNR within 0.14 dB on average on the corpus (at most 0.46 dB,
BENCHMARKS.md), so the residual is coded once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.snc.avio import OPUS_COMPLEXITY, TrackWriter, encode_decoded

__all__ = ["MASTER_SNR_TARGET_DB", "RESIDUAL_COMPLEXITY", "RESIDUAL_RANGE_BPS", "code_residual", "probe_bitrate",
           "residual_bitrate"]

BLOCK_FRAMES = 48000
MASTER_SNR_TARGET_DB = {"transparent": 36.0, "compact": 27.0}
RESIDUAL_RANGE_BPS = {"transparent": (16000, 192000), "compact": (12000, 96000)}
BPS_PER_DB = 16000.0  # master SNR gained per kb/s of Opus residual, measured on the corpus
EXCERPT_BLOCKS = 2  # each excerpt: two gain blocks (2 s at 48 kHz)
EXCERPT_SHARE = 0.1
# libopus complexity of the residual. Above 4 CELT adds its pitch pre-filter (and its decoder
# the matching post-filter), which helps tonal stems but not a noise-like residual: at 0 the
# residual costs about half the encoding time and a fifth less decoding time for the same SNR
# (within 0.1 dB on two corpus residuals, BENCHMARKS.md "SNC speed: less work per track"). The stems keep
# OPUS_COMPLEXITY. Any complexity gives a standard Opus stream: old files decode as before.
# Transparent only: compact's quality was measured at OPUS_COMPLEXITY and not since.
RESIDUAL_COMPLEXITY = {"transparent": 0, "compact": OPUS_COMPLEXITY}


def _round_rate(rate: float, lo: int, hi: int) -> int:
    return int(np.clip(round(rate / 4000) * 4000, lo, hi))


def _range(mode: str, channels: int) -> tuple[int, int]:
    lo, hi = RESIDUAL_RANGE_BPS[mode]
    scale = 1.0 if channels == 2 else 0.6
    return _round_rate(lo * scale, 4000, hi), _round_rate(hi * scale, 4000, hi)


def residual_bitrate(mode: str, channels: int, model_snr_db: float) -> int:
    """The floor of the residual's bitrate from the model's SNR alone: (target - model SNR -
    2 dB) x 8 kb/s per dB, in the mode's range (the first version's rule, whose quality the
    corpus benchmark established; the probe only ever raises it)."""
    lo, hi = RESIDUAL_RANGE_BPS[mode]
    needed = (MASTER_SNR_TARGET_DB[mode] - model_snr_db - 2.0) * 8000.0
    rate = float(np.clip(needed, lo, hi)) * (1.0 if channels == 2 else 0.6)
    return int(round(rate / 4000) * 4000) or 4000


def code_residual(target: np.ndarray, path: Path, rate: int, channels: int, frames: int,
                  bitrate: int, mode: str = "transparent") -> tuple[int, list[list[float]], float]:
    """Code ``target`` with Opus, decode it (as the coding goes, on a second thread when there
    is one), and per block and channel keep the gain in 0..1 that removes the most error.
    Returns packet size, gains and the error energy left."""
    writer = TrackWriter(path, "opus", rate, channels, bitrate, complexity=RESIDUAL_COMPLEXITY[mode])
    blocks = (target[start:start + BLOCK_FRAMES] for start in range(0, frames, BLOCK_FRAMES))
    gains, error = [], 0.0
    for start, coded in zip(range(0, frames, BLOCK_FRAMES), encode_decoded(writer, blocks, BLOCK_FRAMES, frames)):
        want = target[start:start + coded.shape[0]]
        power = np.einsum("ij,ij->j", coded, coded, dtype=np.float64)
        cross = np.einsum("ij,ij->j", want, coded, dtype=np.float64)
        best = np.clip(np.where(power > 0, cross / np.maximum(power, 1e-30), 0.0), 0.0, 1.0)
        rounded = np.round(best, 3)
        gains.append([float(g) for g in rounded])
        left = want - coded * rounded.astype(np.float32)
        error += float(np.dot(left.reshape(-1), left.reshape(-1)))
    return writer.packet_frames, gains, error


def _excerpts(target: np.ndarray, frames: int) -> np.ndarray | None:
    """Evenly spaced excerpts of whole gain blocks, about EXCERPT_SHARE of the file (4 to 12
    of them); None when that would be most of the file (then the probe is the coding)."""
    size = EXCERPT_BLOCKS * BLOCK_FRAMES
    count = int(np.clip(round(frames * EXCERPT_SHARE / size), 4, 12))
    if count * size * 2 > frames:
        return None
    starts = np.linspace(0, frames - size, count).astype(np.int64) // BLOCK_FRAMES * BLOCK_FRAMES
    return np.concatenate([np.asarray(target[s:s + size]) for s in starts])


def probe_bitrate(target: np.ndarray, frames: int, mode: str, channels: int, rate: int, signal: float,
                  energy: float, model_snr_db: float, scratch: Path) -> tuple[int, float | None]:
    """The residual bitrate that brings the master to the mode's SNR target, and the SNR the
    probe predicts for it (None when the file is too short to probe: the floor is used and
    the caller's closed loop checks it). ``signal`` and ``energy`` are the master's and the
    residual target's energies over the whole file."""
    lo, hi = _range(mode, channels)
    floor = residual_bitrate(mode, channels, model_snr_db)
    want = MASTER_SNR_TARGET_DB[mode]
    sample = _excerpts(target, frames)
    if sample is None:
        return floor, None
    share = energy / max(float(np.dot(sample.reshape(-1).astype(np.float64), sample.reshape(-1))), 1e-30)

    def predicted(bitrate: int) -> float:
        _, _, error = code_residual(sample, scratch, rate, channels, sample.shape[0], bitrate, mode)
        return float(10 * np.log10(max(signal, 1e-30) / max(error * share, 1e-30)))

    # First guess: the median corpus track gains 6.5 dB + 1 dB per 16 kb/s.
    bitrate = _round_rate(max(floor, (want - model_snr_db - 6.5) * BPS_PER_DB), lo, hi)
    snr = predicted(bitrate)
    slope = BPS_PER_DB
    for _ in range(2):  # at most two corrections, the second with the slope just measured
        step = _round_rate(bitrate + (want - snr) * slope, max(lo, floor), hi)
        if step == bitrate:
            break
        if abs(step - bitrate) <= slope:  # within 1 dB: the slope is known well enough
            return step, snr + (step - bitrate) / slope
        new_snr = predicted(step)
        if new_snr != snr:
            slope = float(np.clip((step - bitrate) / (new_snr - snr), 0.6 * BPS_PER_DB, 1.6 * BPS_PER_DB))
        bitrate, snr = step, new_snr
    return bitrate, snr
