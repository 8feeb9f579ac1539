"""NI Stems (``.stem.mp4``) out of and into SNC.

An NI Stems file is an MP4 with five audio tracks: the stereo master (the one track an
ordinary player plays: the only one flagged default/enabled), then four stem groups in NI's
order (drums, bass, other, vocals), AAC or ALAC, and a ``stem`` box in ``moov/udta`` holding
JSON: ``{"version": 1, "stems": [{"name", "color"} x 4], "mastering_dsp": {"compressor": {...},
"limiter": {...}}}`` (Traktor applies the mastering DSP to the stem mix; SNC writes it
disabled, as its master is the stored one).

The codecs are FFmpeg's through PyAV (ALAC when the SNC file is lossless, so the samples
survive; AAC otherwise); only the ``stem`` box is written by hand, appended to ``moov`` (FFmpeg
writes ``moov`` after ``mdat``, so no chunk offset moves).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from core.errors import CodecError
from engines.snc.manifest import LIMITS, Manifest, check_stem_name
from engines.snc.reader import SncReader
from engines.snc.scratch import publish, scratch_folder

__all__ = ["NI_SLOTS", "export_stems_mp4", "import_stems_mp4", "read_stem_box", "stem_groups"]

# NI's order of the four stem tracks and the colours its own files use.
NI_SLOTS = (("drums", "#009E73"), ("bass", "#D55E00"), ("other", "#CC79A7"), ("vocals", "#56B4E9"))
_ROLE_SLOT = {"drums": 0, "bass": 1, "vocals": 3}  # every other role plays in "other"
_DEFAULT_COLOUR = "#808080"
# NI's defaults for the mastering DSP block, written disabled (SNC's master is stored).
MASTERING_DSP = {
    "compressor": {"enabled": False, "ratio": 3, "output_gain": 0.5, "release": 0.3, "attack": 0.003,
                   "input_gain": 0.5, "threshold": 0, "hp_cutoff": 300, "dry_wet": 50},
    "limiter": {"enabled": False, "release": 0.05, "threshold": 0, "ceiling": -0.35},
}
AAC_BITRATE = 256000
_MAX_BOX = 1 << 20  # the stem box is a few hundred bytes; refuse a hostile one


@dataclass
class Group:
    name: str
    colour: str
    stems: list[str]


def stem_groups(manifest: Manifest) -> list[Group]:
    """The four NI stem tracks of an SNC file. Up to four stems keep their own tracks, names,
    colours and order (a missing one is a silent track); more are summed by role into NI's
    drums / bass / other / vocals."""
    stems = manifest.stems
    if len(stems) <= 4:
        groups = [Group(s.name, s.colour if s.colour != _DEFAULT_COLOUR else NI_SLOTS[i][1], [s.name])
                  for i, s in enumerate(stems)]
        return groups + [Group(f"silence {i + 1}", NI_SLOTS[i][1], []) for i in range(len(stems), 4)]
    groups = [Group(name, colour, []) for name, colour in NI_SLOTS]
    for stem in stems:
        groups[_ROLE_SLOT.get(stem.role, 2)].stems.append(stem.name)
    return groups


def export_stems_mp4(snc_path: Path, out_path: Path, bitrate: int = AAC_BITRATE) -> dict:
    """Write ``out_path`` (NI Stems) from ``snc_path``; returns what was written."""
    from engines.snc.encode import check_output

    out_path = Path(out_path)
    check_output(out_path, [Path(snc_path)])
    reader = SncReader(snc_path)
    reader.check_intact()
    manifest = reader.manifest
    if manifest.channels != 2:
        raise CodecError(f"NI Stems hold stereo tracks; {snc_path} has {manifest.channels} channels")
    groups = stem_groups(manifest)
    lossless = manifest.mode == "lossless"
    shift = 16 if manifest.sample_format == "s16" else 8  # 24-bit ALAC is carried left-aligned in s32
    with scratch_folder(out_path.parent) as tmp, publish(tmp, out_path) as partial:
        with av.open(str(partial), "w", format="mp4") as out:
            streams = []
            for index in range(5):
                if lossless:
                    stream = out.add_stream("alac", rate=manifest.sample_rate, layout="stereo")
                    # (FFmpeg's ALAC codes s32p as 24-bit samples)
                    stream.codec_context.format = "s16p" if manifest.sample_format == "s16" else "s32p"
                else:
                    stream = out.add_stream("aac", rate=manifest.sample_rate, layout="stereo")
                    stream.bit_rate = bitrate
                stream.metadata["title"] = "master" if index == 0 else groups[index - 1].name
                stream.metadata["handler_name"] = stream.metadata["title"]
                # Only the master plays in an ordinary player: the other tracks are not enabled.
                stream.disposition = av.stream.Disposition.default if index == 0 else av.stream.Disposition(0)
                streams.append(stream)
            pts = 0
            for block in reader.blocks(integer=lossless):
                tracks = [block["master"]]
                for group in groups:
                    if not group.stems:
                        tracks.append(np.zeros_like(block["master"]))
                    else:
                        tracks.append(np.sum([block[name] for name in group.stems], axis=0))
                for stream, data in zip(streams, tracks):
                    frame = _frame(data, lossless, manifest, shift)
                    frame.pts = pts
                    frame.time_base = Fraction(1, manifest.sample_rate)
                    for packet in stream.encode(frame):
                        out.mux(packet)
                pts += block["master"].shape[0]
            for stream in streams:
                for packet in stream.encode(None):
                    out.mux(packet)
        meta = {"version": 1, "mastering_dsp": MASTERING_DSP,
                "stems": [{"name": g.name, "color": g.colour} for g in groups]}
        _append_stem_box(partial, json.dumps(meta, separators=(",", ":")).encode("utf-8"))
    return {"output": str(out_path), "codec": "alac" if lossless else "aac", "tracks": 5,
            "stems": [{"name": g.name, "color": g.colour, "from": g.stems} for g in groups]}


def _frame(data: np.ndarray, lossless: bool, manifest: Manifest, shift: int) -> av.AudioFrame:
    if lossless:
        limit = 2 ** (31 - shift)
        if np.abs(data).max(initial=0) >= limit:
            raise CodecError(f"a stem group's sum exceeds {32 - shift}-bit PCM: NI's ALAC track cannot "
                             "hold it losslessly")
        if shift == 16:
            planar = np.ascontiguousarray(data.T.astype(np.int16))
            frame = av.AudioFrame.from_ndarray(planar, format="s16p", layout="stereo")
        else:
            planar = np.ascontiguousarray((data.T.astype(np.int64) << shift).astype(np.int32))
            frame = av.AudioFrame.from_ndarray(planar, format="s32p", layout="stereo")
    else:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T.astype(np.float32)), format="fltp",
                                           layout="stereo")
    frame.sample_rate = manifest.sample_rate
    return frame


# -- the stem box -----------------------------------------------------------------------------------
def _boxes(handle, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) of the boxes between ``start`` and ``end``
    of the open file ``handle`` (headers only are read)."""
    found = []
    at = start
    while at + 8 <= end:
        handle.seek(at)
        header = handle.read(16)
        size, kind = struct.unpack(">I4s", header[:8])
        length = 8
        if size == 1 and len(header) == 16:
            size, length = struct.unpack(">Q", header[8:16])[0], 16
        elif size == 0:
            size = end - at
        if size < length or at + size > end:
            raise CodecError(f"not an MP4 file: box {kind!r} at byte {at} claims {size} bytes")
        found.append((kind, at, at + length, at + size))
        at += size
    return found


def _find(handle, start: int, end: int, kind: bytes) -> tuple[bytes, int, int, int] | None:
    return next((box for box in _boxes(handle, start, end) if box[0] == kind), None)


def _append_stem_box(path: Path, payload: bytes) -> None:
    """Add ``moov/udta/stem`` to an MP4 whose ``moov`` is its last box (FFmpeg's layout): only
    ``moov`` is rewritten, at the end of the file."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, 2)
        top = _boxes(handle, 0, size)
        if not top or top[-1][0] != b"moov" or top[-1][2] - top[-1][1] != 8:
            raise CodecError("the MP4 writer did not end the file with a 32-bit moov box; cannot add the stem box")
        _, moov_start, moov_payload, moov_end = top[-1]
        handle.seek(moov_payload)
        body = handle.read(moov_end - moov_payload)
        stem = struct.pack(">I4s", 8 + len(payload), b"stem") + payload
        udta = _find(handle, moov_payload, moov_end, b"udta")
        if udta is None:
            body += struct.pack(">I4s", 8 + len(stem), b"udta") + stem
        else:
            _, udta_start, udta_payload, udta_end = (udta[0], *(x - moov_payload for x in udta[1:]))
            if udta_payload - udta_start != 8:
                raise CodecError("a 64-bit udta box is not supported here")
            new_udta = struct.pack(">I4s", udta_end - udta_start + len(stem), b"udta") + \
                body[udta_payload:udta_end] + stem
            body = body[:udta_start] + new_udta + body[udta_end:]
        handle.seek(moov_start)
        handle.write(struct.pack(">I4s", 8 + len(body), b"moov") + body)
        handle.truncate()


def read_stem_box(path: Path) -> dict:
    """The JSON of ``moov/udta/stem``, checked: a list of stems, each with a name."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        try:
            moov = _find(handle, 0, size, b"moov")
            udta = moov and _find(handle, moov[2], moov[3], b"udta")
            stem = udta and _find(handle, udta[2], udta[3], b"stem")
        except (CodecError, struct.error) as exc:
            raise CodecError(f"{path}: {exc}: not an NI Stems file") from None
        if not stem:
            raise CodecError(f"{path}: no NI stem metadata (moov/udta/stem box): not an NI Stems file")
        if stem[3] - stem[2] > _MAX_BOX:
            raise CodecError(f"{path}: the stem box is larger than {_MAX_BOX} bytes")
        handle.seek(stem[2])
        raw = handle.read(stem[3] - stem[2])
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CodecError(f"{path}: the stem box is not JSON ({str(exc)[:80]})") from None
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(stems, list) or not 1 <= len(stems) <= LIMITS["max_stems"] or \
            not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in stems):
        raise CodecError(f"{path}: the stem box has no list of named stems")
    return meta


# -- import -----------------------------------------------------------------------------------------
def _snc_name(name: str, index: int, taken: set[str]) -> str:
    """An NI stem name as an SNC stem name (letters, digits, space, _ . -; not reserved)."""
    cleaned = re.sub(r"[^A-Za-z0-9 _.-]", "_", name.strip())[: LIMITS["max_name_chars"]].strip(" _.-")
    if not cleaned or cleaned in ("master", "residual"):
        cleaned = f"stem {index + 1}"
    base, n = cleaned, 2
    while cleaned in taken:
        cleaned = f"{base[: LIMITS['max_name_chars'] - 4]} {n}"
        n += 1
    check_stem_name(cleaned, f"stem #{index + 1}")
    taken.add(cleaned)
    return cleaned


def import_stems_mp4(in_path: Path, out_path: Path, mode: str | None = None) -> Manifest:
    """An SNC file of an NI Stems file: its master and four stems, names and colours from the
    stem box. ALAC tracks give a lossless SNC file (the samples kept); AAC ones a transparent
    one (resampled to 48 kHz when needed), unless ``mode`` says otherwise."""
    import soundfile as sf

    from engines.snc.encode import check_output, encode

    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.is_file():
        raise CodecError(f"{in_path}: no such file")
    check_output(out_path, [in_path])
    meta = read_stem_box(in_path)
    try:
        container = av.open(str(in_path))
    except (av.error.FFmpegError, OSError) as exc:
        raise CodecError(f"{in_path}: not a readable MP4 ({exc})") from None
    with container:
        streams = list(container.streams.audio)
        if len(streams) != len(meta["stems"]) + 1:
            raise CodecError(f"{in_path}: {len(streams)} audio tracks, but the stem box names "
                             f"{len(meta['stems'])} stems (+ the master)")
        codec = streams[0].codec_context.name
        lossless = codec == "alac" and all(s.codec_context.name == "alac" for s in streams)
        bits = 16 if streams[0].format.name.startswith("s16") else 24
        mode = mode or ("lossless" if lossless else "transparent")
        if mode == "lossless" and not lossless:
            raise CodecError(f"{in_path} holds {codec}, not ALAC: a lossless SNC file of it would only store "
                             "its decoding; use --mode transparent")
        rate = streams[0].rate if mode == "lossless" else 48000
        taken: set[str] = set()
        names = [_snc_name(s["name"], i, taken) for i, s in enumerate(meta["stems"])]
        subtype = ("PCM_16" if bits <= 16 else "PCM_24") if mode == "lossless" else "FLOAT"
        with scratch_folder(out_path.parent, "import") as tmp:
            paths = [Path(tmp) / f"{i}.wav" for i in range(len(streams))]
            for stream, path in zip(streams, paths):
                try:
                    _decode_to_wav(in_path, stream.index, path, rate, mode == "lossless", subtype, sf)
                except (av.error.FFmpegError, ValueError) as exc:
                    raise CodecError(f"{in_path}: track {stream.index} does not decode (damaged file?): "
                                     f"{exc}") from None
            manifest = encode(paths[0], dict(zip(names, paths[1:])), out_path, mode,
                              colours=[s.get("color") for s in meta["stems"]])
    return manifest


def _decode_to_wav(path: Path, index: int, out: Path, rate: int, exact: bool, subtype: str, sf) -> None:
    """Decode track ``index`` of ``path`` into a WAV file (integers kept exactly when ``exact``)."""
    with av.open(str(path)) as container, sf.SoundFile(str(out), "w", rate, 2, subtype, format="WAV") as sink:
        stream = next(s for s in container.streams.audio if s.index == index)
        if stream.codec_context.channels != 2:
            raise CodecError(f"{path}: track {index} has {stream.codec_context.channels} channels, NI Stems "
                             "tracks are stereo")
        resampler = None if exact else av.AudioResampler(format="flt", layout="stereo", rate=rate)
        # The track's length: AAC's last frame is padded past it.
        left = int(round(float(stream.duration * stream.time_base) * rate)) if stream.duration else None

        def write(data: np.ndarray) -> None:
            nonlocal left
            if left is not None:
                data, left = data[:left], left - min(left, data.shape[0])
            sink.write(data)

        for frame in container.decode(stream):
            if exact:
                data = frame.to_ndarray()  # planar (2, n): s16p, or s32p with the 24 bits left-aligned
                if data.dtype == np.int16:
                    write(np.ascontiguousarray(data.T))
                else:
                    if np.any(data & 0xFF):
                        raise CodecError(f"{path}: track {index} has samples of more than 24 bits; SNC's "
                                         "lossless mode keeps 16 or 24 (use --mode transparent)")
                    write(np.ascontiguousarray(data.T.astype(np.int32)))  # (PCM_24 keeps the top 24 bits)
            else:
                for converted in resampler.resample(frame):
                    write(converted.to_ndarray().reshape(-1, 2))
        if resampler is not None:
            for converted in resampler.resample(None):
                write(converted.to_ndarray().reshape(-1, 2))
