"""The SNC encoder: stems + a mastering residual in one Matroska file.

Passes, each block by block so memory stays bounded:
  A  measure: per-channel least-squares gain of the master against the sum of the stems
     (the parametric mastering model), stem activity for bitrates, PCM hashes;
  B  encode each stem to its own temporary track (FLAC 24-bit or Opus at a chosen bitrate);
  C  decode those tracks again and code the residual = master - model(sum of DECODED stems)
     (closed loop, so the reader reconstructs the master from exactly what it decodes);
  D  merge the tracks without re-encoding into one file in the scratch folder, renamed into
     place (atomic: no half-written .snc ever exists; engines/snc/scratch.py sweeps what a
     killed encoder leaves).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from core.errors import CodecError
from engines.snc.avio import TrackWriter, decode_in_step, merge_tracks, parallel
from engines.snc.integrity import integrity_table
from engines.snc.lossy import Coded, encode_lossy
from engines.snc.loudness import LoudnessMeter
from engines.snc.manifest import FORMAT_VERSION, LIMITS, MODES, Manifest, StemInfo, integrity_group_ms, manifest_crc32
from engines.snc.mastering import MasteringModel
from engines.snc.pcm import INT_SCALE, InputTrack
from engines.snc.scratch import publish, scratch_folder

__all__ = ["check_output", "encode", "predict"]

BLOCK_FRAMES = 48000
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


def check_output(output: Path, inputs: list[Path], what: str = "output") -> None:
    """Refuse an output that is a folder, lies in a missing folder, or is one of the inputs
    (by path or by identity: a link to an input is the input)."""
    output = Path(output)
    if output.is_dir():
        raise CodecError(f"{what} {output} is a folder; name a file")
    if not output.parent.is_dir():
        raise CodecError(f"{what} {output}: no such folder {output.parent}")
    target = output.resolve()
    for source in inputs:
        source = Path(source)
        same = source.resolve() == target
        if not same and output.exists() and source.exists():
            try:
                same = os.path.samefile(source, output)
            except OSError:
                same = False
        if same:
            raise CodecError(f"{what} {output} is also an input ({source}); write to another file")


def _measure(master: InputTrack, stems: list[InputTrack], integer: bool, scale: float) -> dict:
    """Pass A: mastering gain per channel, stem activity, PCM hashes."""
    channels, frames = master.channels, master.frames
    cross = np.zeros(channels)
    power = np.zeros(channels)
    active = np.zeros(len(stems))
    blocks = 0
    digests = [hashlib.sha256() for _ in range(len(stems) + 1)]
    meters = [LoudnessMeter(master.sample_rate, channels) for _ in range(len(stems) + 1)]
    readers = [t.blocks(BLOCK_FRAMES, channels, frames, integer) for t in [master, *stems]]
    for parts in zip(*readers):
        for digest, meter, part in zip(digests, meters, parts):
            digest.update(np.ascontiguousarray(part, dtype=np.int32 if integer else np.float32).data)
            meter.push(part / scale)
        mix = np.sum([p.astype(np.float64) for p in parts[1:]], axis=0)
        cross += np.sum(parts[0].astype(np.float64) * mix, axis=0)
        power += np.sum(mix * mix, axis=0)
        for index, part in enumerate(parts[1:]):
            rms = np.sqrt(np.mean((part.astype(np.float64) / scale) ** 2))
            active[index] += rms > 10 ** (-50 / 20)
        blocks += 1
    gain = np.where(power > 0, cross / np.maximum(power, 1e-30), 0.0)
    return {"gain": gain, "activity": active / max(blocks, 1), "digests": [d.hexdigest() for d in digests],
            "loudness": [m.integrated() for m in meters]}


def encode(master_path: Path, stem_paths: dict[str, Path], out_path: Path, mode: str = "transparent",
           mastering: str = "fir-envelope", colours: list[str | None] | None = None,
           mix_track: bool = False, contexts: dict[str, dict] | None = None) -> Manifest:
    """Encode ``master_path`` and its stems into ``out_path``; returns the manifest written.
    ``mastering`` picks the lossy mastering model (``gain`` is the ablation; lossless files
    always use the integer-exact gain). ``colours``: a ``#RRGGBB`` per stem (others grey).
    ``mix_track`` adds the master as an ordinary track (format 4), the one track an ordinary
    player plays: FLAC in lossless files, Opus at ``MIX_BITRATES`` otherwise. ``contexts``: more
    listening contexts for the manifest (docs/snc_player.md), beside the default ones."""
    if mode not in MODES:
        raise CodecError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mastering not in ("gain", "fir-envelope"):
        raise CodecError(f"mastering model {mastering!r} is not one of gain, fir-envelope")
    if not stem_paths:
        raise CodecError("an SNC file needs at least one stem (--stem NAME=FILE)")
    out_path = Path(out_path)
    check_output(out_path, [Path(master_path), *map(Path, stem_paths.values())])
    master = InputTrack(Path(master_path), "master")
    stems = [InputTrack(Path(p), name) for name, p in stem_paths.items()]
    infos = [StemInfo(name=name, role=_role(name)) for name in stem_paths]
    for info, colour in zip(infos, colours or []):
        if isinstance(colour, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
            info.colour = colour
    for index, info in enumerate(infos):
        info.validate(f"stem #{index + 1}")
    _check_inputs(master, stems, mode)
    with scratch_folder(out_path.parent) as tmp:
        if mode == "lossless":
            coded = _encode_lossless(master, stems, infos, Path(tmp))
        else:
            coded = encode_lossy(master, stems, infos, mode, Path(tmp), mastering)
        manifest = Manifest(
            mode=mode, sample_rate=master.sample_rate, channels=master.channels, frames=master.frames,
            sample_format=master.sample_format if mode == "lossless" else "float",
            stems=infos, residual=coded.residual, mastering=coded.mastering,
            contexts={**_default_contexts(infos), **(contexts or {})}, master_sha256_pcm=coded.master_digest,
            version=FORMAT_VERSION if mix_track else 3,
        )
        manifest.loudness_lufs = dict(zip(["master", *(t.name for t in stems)], coded.loudness))
        for info in infos:
            info.loudness_lufs = manifest.loudness_lufs.get(info.name)
        tracks = [coded.residual_path, *coded.stem_files]
        if mix_track:
            manifest.mix = _code_mix(master, mode, Path(tmp) / "mix.mka")
            tracks.append(Path(tmp) / "mix.mka")
        manifest.integrity = integrity_table(tracks, integrity_group_ms(manifest.duration_s, len(tracks)))
        manifest.validate("encoder")
        text = manifest.to_json()
        with publish(tmp, out_path) as partial:
            merge_tracks(list(zip(tracks, manifest.track_names)), partial,
                         {"SNC_MANIFEST": text, "SNC_MANIFEST_CRC32": manifest_crc32(text),
                          "SNC_VERSION": str(manifest.version)},
                         default=len(tracks) - 1 if mix_track else None)
    return manifest


# Opus bit rate of the mix track (stereo; mono 60 %): what ordinary players play.
MIX_BITRATES = {"transparent": 128000, "compact": 96000}


def _code_mix(master: InputTrack, mode: str, path: Path) -> dict:
    """The master as one track: FLAC of its PCM (lossless files) or Opus."""
    integer = mode == "lossless"
    channels, frames, rate = master.channels, master.frames, master.sample_rate
    bitrate = None if integer else int(MIX_BITRATES[mode] * (1.0 if channels == 2 else 0.6))
    writer = TrackWriter(path, "flac" if integer else "opus", rate, channels, bitrate)
    for block in master.blocks(BLOCK_FRAMES, channels, frames, integer, np.float32):
        writer.write(block)
    writer.close()
    return {"codec": "flac" if integer else "opus", "bitrate_bps": bitrate, "packet_frames": writer.packet_frames}


def _encode_lossless(master: InputTrack, stems: list[InputTrack], infos: list[StemInfo], tmp: Path) -> Coded:
    """FLAC stems and residual of the integer PCM; the residual is exact, the model a rounded gain."""
    scale = INT_SCALE[master.sample_format]
    channels, frames, rate = master.channels, master.frames, master.sample_rate
    measured = _measure(master, stems, True, scale)
    gain = measured["gain"]
    for index, info in enumerate(infos):
        info.codec = "flac"
        info.bitrate_bps = None
        info.sha256_pcm = measured["digests"][index + 1]

    def code_stem(index: int) -> Path:  # (one thread per stem: FFmpeg's FLAC runs without the GIL)
        path = tmp / f"stem{index}.mka"
        writer = TrackWriter(path, "flac", rate, channels)
        for block in stems[index].blocks(BLOCK_FRAMES, channels, frames, True):
            writer.write(block)
        writer.close()
        infos[index].packet_frames = writer.packet_frames
        return path

    stem_files = parallel(code_stem, range(len(stems)))
    residual_path = tmp / "residual.mka"
    writer = TrackWriter(residual_path, "flac", rate, channels)
    decoded = decode_in_step(stem_files, BLOCK_FRAMES, frames, True)
    energy = 0.0
    for master_block, stem_blocks in zip(master.blocks(BLOCK_FRAMES, channels, frames, True), decoded):
        residual = master_block.astype(np.int64) - predict(stem_blocks, gain, True)
        if np.abs(residual).max(initial=0) >= 2 ** 23:
            raise CodecError("the residual does not fit 24 bits: the stems do not add up to the master")
        energy += float(np.sum((residual / scale) ** 2))
        writer.write(residual)
    writer.close()
    packet_frames = writer.packet_frames
    rms_db = 10 * np.log10(max(energy / max(frames * channels, 1), 1e-20))
    residual = {"codec": "flac", "bitrate_bps": None, "rms_dbfs": round(float(rms_db), 2),
                "gain_block_frames": BLOCK_FRAMES, "gains": None, "packet_frames": packet_frames}
    return Coded(stem_files, residual_path, residual, MasteringModel.gain_only(gain).to_manifest(),
                 measured["digests"][0], measured["loudness"])


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
