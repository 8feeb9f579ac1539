"""The lossy SNC encoder (transparent and compact modes): Opus stems at bitrates chosen from
their content, the fitted mastering model, and an Opus residual coded in closed loop.

Passes, block by block (RAM does not grow with the length; float32 scratch files in the
encoder's scratch folder hold the master, the decoded stem mix and the residual target):
  1  measure the stems (activity, loudness against the loudest stem) and hash them;
  2  code each stem with Opus at its bitrate; the master's measure (hash, loudness) and its
     scratch copy run beside them, as one more job after the stems;
  3  decode the stems, sum them (scratch file) and accumulate the cross spectra for the FIR;
  4  filter the mix, fit the gain envelope against the master;
  5  residual = master - model(mix of DECODED stems) (scratch file); 4 and 5 run on one
     contiguous stretch of blocks per thread (the same values as one pass); its bitrate is measured
     by a probe that codes a tenth of it (engines/snc/residual.py);  6  code the residual;
  7  decode it and store, per block and channel, the gain in 0..1 that removes the most
     error; only when the master's SNR then falls more than 0.5 dB short of the mode's target
     (a file too short to probe) do 6-7 run once more at a bitrate raised by the shortfall.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from engines.snc.avio import TrackWriter, decode_in_step, parallel, workers
from engines.snc.loudness import LoudnessMeter
from engines.snc.manifest import StemInfo
from engines.snc.mastering import (
    ENVELOPE_HOPS,
    FIR_LOOKAHEAD,
    FIR_TAPS,
    MAX_ENVELOPE_POINTS,
    FirFitter,
    MasteringModel,
    envelope_gains,
    mix_sum,
)
from engines.snc.pcm import InputTrack
from engines.snc.residual import (
    BPS_PER_DB,
    MASTER_SNR_TARGET_DB,
    RESIDUAL_RANGE_BPS,
    code_residual,
    probe_bitrate,
    residual_bitrate,
)

__all__ = ["MASTER_SNR_TARGET_DB", "STEM_BITRATES", "Coded", "encode_lossy", "residual_bitrate", "stem_bitrate"]

BLOCK_FRAMES = 48000
# Opus VBR target for a stereo stem active all the time, as loud as the loudest stem.
STEM_BITRATES = {"transparent": 48000, "compact": 32000}
STEM_FLOOR_BPS = 6000
ACTIVE_DBFS = -50.0
ENVELOPE_BUDGET_BYTES = 512_000  # packed envelope in the manifest (its limit is 1 MiB)


@dataclass
class Coded:
    """What the lossy passes produced, for the manifest and the merge."""

    stem_files: list[Path]
    residual_path: Path
    residual: dict
    mastering: dict
    master_digest: str
    loudness: list[float | None]  # LUFS of the master, then of each stem


def stem_bitrate(mode: str, channels: int, activity: float, relative_db: float) -> int:
    """Opus VBR target of a stem from its content. libopus spends next to nothing on silent
    frames, so a stem playing half the time costs about half without lowering the target; a
    stem with no block above -50 dBFS gets the floor; a stem well under the loudest one is
    masked by the others and gets up to a quarter less."""
    if activity <= 0.0:
        return STEM_FLOOR_BPS
    scale = 1.0 if channels == 2 else 0.6
    level = 1.0 if relative_db >= -10.0 else max(0.75, 1.0 + (relative_db + 10.0) / 40.0)
    return int(round(STEM_BITRATES[mode] * scale * level / 1000) * 1000)


def _measure(track: InputTrack, channels: int, frames: int, copy: np.ndarray | None = None) -> dict:
    """One track's share of active blocks and their mean power, its hash and loudness; with
    ``copy``, its float32 PCM into that scratch file (the master's, which later passes read)."""
    digest, meter = hashlib.sha256(), LoudnessMeter(track.sample_rate, channels)
    active, energy, blocks = 0, 0.0, 0
    for start, part in zip(range(0, frames, BLOCK_FRAMES),
                           track.blocks(BLOCK_FRAMES, channels, frames, False, np.float32)):
        if copy is not None:
            copy[start:start + part.shape[0]] = part
        digest.update(np.ascontiguousarray(part).data)  # (the same bytes as tobytes(), no copy)
        meter.push(part)
        flat = part.reshape(-1)
        power = float(np.dot(flat, flat)) / max(flat.size, 1)
        if power > 10 ** (ACTIVE_DBFS / 10):
            active += 1
            energy += power
        blocks += 1
    return {"digest": digest.hexdigest(), "loudness": meter.integrated(), "active": active, "energy": energy,
            "blocks": blocks}


def _stem_levels(measured: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per stem: the share of active blocks, and their mean power relative to the loudest stem's (dB)."""
    active = np.array([m["active"] for m in measured], dtype=np.float64)
    energy = np.array([m["energy"] for m in measured])
    level = 10 * np.log10(np.maximum(energy / np.maximum(active, 1), 1e-20))
    loudest = float(level[active > 0].max()) if np.any(active > 0) else 0.0
    return active / max(measured[0]["blocks"], 1), level - loudest


def _window(mix: np.ndarray, start: int, stop: int) -> np.ndarray:
    """mix[start:stop] with zeros outside the file."""
    frames = mix.shape[0]
    out = np.zeros((stop - start, mix.shape[1]), np.float32)
    lo, hi = max(start, 0), min(stop, frames)
    if hi > lo:
        out[lo - start:hi - start] = mix[lo:hi]
    return out


def _runs(frames: int) -> list[range]:
    """The block starts of the file cut into one contiguous run per worker thread."""
    starts = range(0, frames, BLOCK_FRAMES)
    size = -(-len(starts) // max(1, min(workers(), len(starts))))
    return [starts[i:i + size] for i in range(0, len(starts), size)]


def _envelope(model: MasteringModel, mix: np.ndarray, master: np.ndarray, frames: int,
              store: np.ndarray) -> tuple[int, np.ndarray]:
    """Pass 4: the filtered mix (kept in ``store``) and the envelope at the finest hop whose
    packed size fits the manifest budget."""
    channels = mix.shape[1]
    hop = next((h for h in ENVELOPE_HOPS if -(-frames // h) <= MAX_ENVELOPE_POINTS), ENVELOPE_HOPS[-1])
    runs = _runs(frames)
    threads = 1 if len(runs) > 1 else workers()  # (else the FFTs of the two channels side by side)

    def envelope_run(starts: range) -> np.ndarray:
        # A run after the first starts from NaN gains: its silent hops before its first sound
        # take the previous run's last gain below, as one sequential pass would give them.
        previous = np.ones(channels) if starts.start == 0 else np.full(channels, np.nan)
        rows = []
        for start in starts:
            target = master[start:start + BLOCK_FRAMES]
            n = target.shape[0]
            filtered = model._filter(_window(mix, start - model.history, start + n + model.lookahead), n, threads)
            store[start:start + n] = filtered
            padded = -(-n // hop) * hop
            if padded > n:
                filtered = np.concatenate([filtered, np.zeros((padded - n, channels))])
                target = np.concatenate([target, np.zeros((padded - n, channels))])
            gains = envelope_gains(filtered, target, hop, previous)
            previous = gains[-1]
            rows.append(gains)
        return np.concatenate(rows)

    rows = parallel(envelope_run, runs)
    for before, run in zip(rows, rows[1:]):
        unset = np.isnan(run)  # (a leading stretch per channel: measured gains are finite)
        run[unset] = np.broadcast_to(before[-1], run.shape)[unset]
    envelope = np.concatenate(rows)[: -(-frames // hop)]
    while True:
        model.hop, model.envelope = hop, envelope
        if len(model.to_manifest()["envelope"]) <= ENVELOPE_BUDGET_BYTES or hop == ENVELOPE_HOPS[-1]:
            return hop, envelope
        factor = ENVELOPE_HOPS[ENVELOPE_HOPS.index(hop) + 1] // hop
        hop *= factor
        count = -(-frames // hop)
        padded = np.concatenate([envelope, np.repeat(envelope[-1:], count * factor - len(envelope), axis=0)])
        envelope = padded.reshape(count, factor, channels).mean(axis=1)


def _residual_run(model: MasteringModel, pcm: np.ndarray, mix: np.ndarray, target_file: np.ndarray,
                  starts: range) -> list[tuple[float, float]]:
    """Pass 5 on a run of blocks: the residual target into ``target_file`` (which holds the
    filtered mix there until then); per block the residual's and the master's energy."""
    energies = []
    for start in starts:
        target = np.asarray(pcm[start:start + BLOCK_FRAMES])
        n = target.shape[0]
        if model.kind == "gain":
            prediction = model.predict(_window(mix, start, start + n), start, n)
        else:  # the reader computes exactly this: model.predict = filter * envelope
            prediction = target_file[start:start + n] * model.gains_at(start, n)
        residual = target - prediction
        target_file[start:start + n] = residual
        energies.append((float(np.dot(residual.reshape(-1), residual.reshape(-1))),
                         float(np.dot(target.reshape(-1), target.reshape(-1)))))
    return energies


def encode_lossy(master: InputTrack, stems: list[InputTrack], infos: list[StemInfo], mode: str, tmp: Path,
                 mastering: str = "fir-envelope") -> Coded:
    """Run passes 1-7 into ``tmp``; ``mastering="gain"`` keeps the per-channel gain only
    (the ablation the benchmark uses to show what the model saves)."""
    channels, frames, rate = master.channels, master.frames, master.sample_rate
    pcm = np.lib.format.open_memmap(tmp / "master.npy", "w+", np.float32, (frames, channels))
    # Pass 1 measures the stems, one per thread; the stems' bitrates need nothing else.
    measured = parallel(lambda track: _measure(track, channels, frames), stems)
    activity, relative_db = _stem_levels(measured)
    for index, info in enumerate(infos):
        info.codec = "opus"
        info.bitrate_bps = stem_bitrate(mode, channels, float(activity[index]), float(relative_db[index]))
        info.sha256_pcm = measured[index]["digest"]

    def code_stem(index: int, copy: np.ndarray = pcm) -> Path | dict:  # (libopus runs without the GIL)
        if index == len(stems):  # the master's measure and copy fill the last round of coding
            return _measure(master, channels, frames, copy)
        path = tmp / f"stem{index}.mka"
        writer = TrackWriter(path, "opus", rate, channels, infos[index].bitrate_bps)
        for block in stems[index].blocks(BLOCK_FRAMES, channels, frames, False, np.float32):
            writer.write(block)
        writer.close()
        infos[index].packet_frames = writer.packet_frames
        return path

    *stem_files, master_measured = parallel(code_stem, range(len(stems) + 1))

    mix = np.lib.format.open_memmap(tmp / "mix.npy", "w+", np.float32, (frames, channels))
    fitter, threads = FirFitter(channels), workers()
    cross, power = np.zeros(channels), np.zeros(channels)
    targets = (pcm[i:i + BLOCK_FRAMES] for i in range(0, frames, BLOCK_FRAMES))
    decoded = decode_in_step(stem_files, BLOCK_FRAMES, frames, False)
    for start, target, parts in zip(range(0, frames, BLOCK_FRAMES), targets, decoded):
        mix[start:start + parts[0].shape[0]] = mix_sum(parts)
        block = mix[start:start + parts[0].shape[0]]  # C order again (decoded blocks are planar)
        if mastering == "gain":
            cross += np.einsum("ij,ij->j", block, target, dtype=np.float64)
            power += np.einsum("ij,ij->j", block, block, dtype=np.float64)
        else:
            fitter.add(block, target, threads)
    gain = np.where(power > 0, cross / np.maximum(power, 1e-30), 0.0)
    target_file = np.lib.format.open_memmap(tmp / "residual.npy", "w+", np.float32, (frames, channels))
    if mastering == "gain":
        model = MasteringModel.gain_only(gain)
    else:
        model = MasteringModel("fir-envelope", channels, fir=fitter.fir(FIR_TAPS, FIR_LOOKAHEAD),
                               lookahead=FIR_LOOKAHEAD, hop=ENVELOPE_HOPS[0], envelope=np.ones((1, channels)))
        model.fir = model.fir.astype(np.float16).astype(np.float64)  # the taps as stored
        _envelope(model, mix, pcm, frames, target_file)  # the filtered mix, until pass 5 replaces it
        model = model.stored(frames)

    energy = signal = 0.0
    for runs in parallel(partial(_residual_run, model, pcm, mix, target_file), _runs(frames)):
        for block_energy, block_signal in runs:  # (summed in block order, as one pass sums them)
            energy += block_energy
            signal += block_signal
    model_snr = 10 * np.log10(max(signal, 1e-30) / max(energy, 1e-30))
    bitrate, probed = probe_bitrate(target_file, frames, mode, channels, rate, signal, energy, model_snr,
                                    tmp / "probe.mka")
    residual_path = tmp / "residual.mka"
    packet_frames, gains, error = code_residual(target_file, residual_path, rate, channels, frames, bitrate, mode)
    master_snr = 10 * np.log10(max(signal, 1e-30) / max(error, 1e-30))
    # Closed loop on the rate: one retry when the coded residual fell short of the target.
    want = MASTER_SNR_TARGET_DB[mode]
    retry = min(int(round((bitrate + (want - master_snr) * BPS_PER_DB) / 4000)) * 4000, RESIDUAL_RANGE_BPS[mode][1])
    if master_snr < want - 0.5 and retry > bitrate:
        bitrate = retry
        packet_frames, gains, error = code_residual(target_file, residual_path, rate, channels, frames, bitrate, mode)
        master_snr = 10 * np.log10(max(signal, 1e-30) / max(error, 1e-30))
    del mix, target_file, pcm
    rms_db = 10 * np.log10(max(energy / max(frames * channels, 1), 1e-20))
    residual = {"codec": "opus", "bitrate_bps": bitrate, "rms_dbfs": round(float(rms_db), 2),
                "model_snr_db": round(float(model_snr), 2), "master_snr_db": round(float(master_snr), 2),
                "probe_snr_db": None if probed is None else round(probed, 2),
                "gain_block_frames": BLOCK_FRAMES, "gains": gains,
                "packet_frames": packet_frames}
    return Coded(stem_files, residual_path, residual, model.to_manifest(), master_measured["digest"],
                 [master_measured["loudness"], *(m["loudness"] for m in measured)])
