"""The SNC reader: validates a file before trusting it, then decodes every track in step,
block by block (bounded memory whatever the length), from the start or from any time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from scipy import fft as sfft

from bridge.errors import CodecError
from engines.snc.manifest import LIMITS, Manifest
from engines.snc.mastering import MasteringModel
from engines.snc.pcm import INT_SCALE
from engines.snc.planar import TrackBuffer

__all__ = ["SncReader"]

_EXPECTED_CODEC = {"flac": "flac", "opus": "opus"}
# Opus needs 80 ms of pre-roll after a seek to decode exactly.
_PREROLL_S = 0.1
# A track decoded this far ahead of the others means a file not interleaved in time (SNC's
# writer interleaves packets by time): refused rather than buffered without bound.
_MAX_SKEW_S = 30
_V1_OPUS_PACKET_FRAMES = 960


class SncReader:
    """Open with ``SncReader(path)``; ``manifest`` describes it; ``blocks()`` yields
    ``{"master": ..., "<stem>": ...}`` arrays of shape (frames, channels), float in -1..1
    (``integer=True`` in lossless mode gives the exact integer PCM)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CodecError(f"{self.path}: no such file")
        if self.path.stat().st_size < 64:
            raise CodecError(f"{self.path}: {self.path.stat().st_size} bytes is too short to be an SNC file")
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError) as exc:
            raise CodecError(f"{self.path}: not a readable SNC/Matroska file ({exc})") from None
        try:
            text = container.metadata.get("SNC_MANIFEST") or container.metadata.get("snc_manifest")
            if text is None:
                raise CodecError(f"{self.path}: a Matroska file without an SNC manifest (not an SNC file)")
            self.manifest = Manifest.from_json(text, f"{self.path} manifest")
            streams = container.streams.audio
            if len(streams) != len(self.manifest.stems) + 1:
                raise CodecError(f"{self.path}: {len(streams)} audio tracks but the manifest lists "
                                 f"{len(self.manifest.stems)} stems + residual")
            expected = ["residual", *(s.name for s in self.manifest.stems)]
            codecs = [self.manifest.residual.get("codec"), *(s.codec for s in self.manifest.stems)]
            for index, (stream, title, codec) in enumerate(zip(streams, expected, codecs)):
                if stream.metadata.get("title") != title:
                    raise CodecError(f"{self.path}: track {index} is titled {stream.metadata.get('title')!r}, "
                                     f"the manifest says {title!r}")
                if stream.codec_context.name != _EXPECTED_CODEC.get(codec):
                    raise CodecError(f"{self.path}: track {index} ({title}) is {stream.codec_context.name}, "
                                     f"the manifest says {codec}")
                if stream.codec_context.channels != self.manifest.channels or stream.rate != self.manifest.sample_rate:
                    raise CodecError(f"{self.path}: track {index} ({title}) is {stream.codec_context.channels} ch "
                                     f"at {stream.rate} Hz, the manifest says {self.manifest.channels} ch at "
                                     f"{self.manifest.sample_rate} Hz")
        finally:
            container.close()
        self.names = ["residual", *(s.name for s in self.manifest.stems)]
        self.packet_frames = [self.manifest.residual.get("packet_frames"), *(s.packet_frames for s in self.manifest.stems)]
        if self.manifest.version == 1:  # v1 wrote Opus in libopus's default 20 ms packets, without packet sizes
            codecs = [self.manifest.residual.get("codec"), *(s.codec for s in self.manifest.stems)]
            self.packet_frames = [_V1_OPUS_PACKET_FRAMES if c == "opus" and f is None else f
                                  for c, f in zip(codecs, self.packet_frames)]
        self.integer = self.manifest.mode == "lossless"
        self.scale = INT_SCALE.get(self.manifest.sample_format, 1.0) if self.integer else 1.0
        self.model = MasteringModel.from_manifest(self.manifest.mastering, self.manifest.channels,
                                                  self.manifest.frames, f"{self.path} mastering")
        self.residual_gains: np.ndarray | None = None
        self.gain_block_frames = int(self.manifest.residual.get("gain_block_frames") or 48000)
        table = self.manifest.residual.get("gains")
        if table is not None:
            try:
                self.residual_gains = np.asarray(table, dtype=np.float64).reshape(-1, self.manifest.channels)
            except ValueError:
                raise CodecError(f"{self.path}: residual gain table does not match {self.manifest.channels} "
                                 "channels") from None
            needed = -(-self.manifest.frames // max(self.gain_block_frames, 1))
            if self.residual_gains.shape[0] != needed or self.gain_block_frames <= 0:
                raise CodecError(f"{self.path}: residual gain table has {self.residual_gains.shape[0]} blocks, "
                                 f"{needed} expected")

    def blocks(self, block_frames: int = 48000, start_s: float = 0.0, duration_s: float | None = None,
               integer: bool = False, with_residual: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Decode from ``start_s`` for ``duration_s`` (None = to the end), in step.
        ``with_residual=False`` gives the mastering model of the stems alone as "master"."""
        try:
            yield from self._blocks(block_frames, start_s, duration_s, integer, with_residual)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise CodecError(f"{self.path}: cannot decode: {exc}") from None

    def _blocks(self, block_frames: int, start_s: float, duration_s: float | None, integer: bool,
                with_residual: bool) -> Iterator[dict[str, np.ndarray]]:
        if block_frames <= 0 or block_frames > 10 * self.manifest.sample_rate:
            raise CodecError(f"block of {block_frames} frames is outside 1..{10 * self.manifest.sample_rate}")
        rate, channels, frames = self.manifest.sample_rate, self.manifest.channels, self.manifest.frames
        start = int(round(max(0.0, start_s) * rate))
        if start >= frames:
            raise CodecError(f"start {start_s} s is past the end ({self.manifest.duration_s:.3f} s)")
        end = frames if duration_s is None else min(frames, start + int(round(duration_s * rate)))
        dtype = np.int32 if self.integer else np.float32  # (24-bit PCM in lossless files)
        history, ahead = self.model.history, self.model.lookahead
        # The model's filter needs `history` frames of the mix before `start`: decode from there.
        # Every track's buffer holds `history` frames before `done` (silence before `first`).
        first = max(0, start - history)
        with av.open(str(self.path)) as container:
            streams = list(container.streams.audio)
            buffers = [TrackBuffer(channels, dtype, history, 2 * (block_frames + history + ahead) + 16384)
                       for _ in streams]
            positions: list[int | None] = [None] * len(streams)
            if first > 0:
                container.seek(int(max(0.0, first / rate - _PREROLL_S) * av.time_base), any_frame=False)
            done = first
            slots = {s.index: i for i, s in enumerate(streams)}
            delays = [int(getattr(s.codec_context, "delay", 0) or 0) for s in streams]

            def ready() -> Iterator[dict[str, np.ndarray]]:
                nonlocal done
                while done < end:
                    n = min(block_frames, end - done, start - done if done < start else block_frames)
                    if not all(b.size >= history + n + ahead for b in buffers):
                        return
                    block = self._step(buffers, n, done, integer and self.integer, with_residual, done >= start)
                    for buffer in buffers:
                        buffer.advance(n)
                    if block is not None:
                        yield block
                    done += n

            for packet in container.demux(*streams):
                slot = slots[packet.stream.index]
                try:
                    decoded = streams[slot].decode(packet)
                except av.error.FFmpegError as exc:
                    raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) is corrupt near "
                                     f"{float(packet.pts or 0) * float(streams[slot].time_base):.3f} s: {exc}") from None
                buffer = buffers[slot]
                for frame in decoded:
                    at = positions[slot]  # frames follow each other: only the first needs its time
                    if at is None:
                        at = self._place(packet, frame.samples, slot, delays[slot], rate)
                    positions[slot] = at + frame.samples
                    # Frames before `done` are pre-roll (after a seek): left out.
                    buffer.push_frame(frame, done - at if at < done else 0, self.integer)
                if buffer.size >= history + block_frames + ahead or done >= end:
                    yield from ready()  # (a block needs every track; checked only when this one has one)
                if done >= end:
                    return
                if buffer.size > history + block_frames + ahead + _MAX_SKEW_S * rate:
                    raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) runs more than {_MAX_SKEW_S} s "
                                     f"ahead of the others near {done / rate:.3f} s (tracks not interleaved)")
            while done < end:  # the end of the file: silence after it, one block at a time
                need = history + min(block_frames, end - done) + ahead
                for buffer in buffers:
                    buffer.pad(need - buffer.size)
                yield from ready()

    def _place(self, packet: av.Packet, samples: int, slot: int, delay: int, rate: int) -> int:
        """The exact frame index of the first sample decoded from ``packet`` (the first decoded
        after opening or seeking). Matroska keeps times in whole milliseconds; every packet but
        the last holds ``packet_frames`` frames from ``k * packet_frames - delay``, so the time
        only has to pick k. A decoder drops ``delay`` frames from the first packet it sees."""
        if packet.pts is None:
            return 0
        approx = float(packet.pts * packet.time_base) * rate
        grid = self.packet_frames[slot]
        if not grid:
            return int(round(approx))
        start = int(round((approx + delay) / grid)) * grid - delay
        return start + delay if delay and samples == grid - delay else start

    def _step(self, buffers: list[TrackBuffer], n: int, first: int, integer: bool, with_residual: bool,
              wanted: bool) -> dict[str, np.ndarray] | None:
        """One block [first, first + n): the model of the stem mix (planar, from the buffers'
        history, block and look-ahead), plus the residual scaled per block. None for a block
        decoded only to fill the filter's history (before the start of a seek)."""
        if not wanted:
            return None
        model = self.model
        history, ahead = model.history, model.lookahead
        span = history + n + ahead
        stems = [b.view(span) for b in buffers[1:]]
        # The mix, zero-padded to the FFT's length (the filter then needs no padded copy).
        width = span if model.kind == "gain" else sfft.next_fast_len(span, real=True)
        mix = np.empty((stems[0].shape[0], width), np.float64 if self.integer else np.float32)
        np.copyto(mix[:, :span], stems[0], casting="unsafe")
        mix[:, span:] = 0
        for stem in stems[1:]:
            mix[:, :span] += stem
        if ahead and first + n + ahead > self.manifest.frames:
            mix[:, history + max(self.manifest.frames - first, 0):] = 0  # the encoder saw silence past the end
        master = model.predict_planar(mix, first, n, self.integer)
        if with_residual:
            residual = buffers[0].view(n, history)
            gains = self._residual_gain(first, n)
            master += residual if gains is None else residual * gains  # (master is this block's own array)
        parts = [stem[:, history:history + n] for stem in stems]
        if not self.integer:
            out = {"master": master.astype(np.float32, copy=False), **{k: p.copy() for k, p in zip(self.names[1:], parts)}}
        elif integer:
            out = {"master": master, **{k: p.astype(np.int64) for k, p in zip(self.names[1:], parts)}}
        else:  # a lossless file read as float: integers below 2^24 times a power of two, exact in float32
            inverse = np.float32(1.0 / self.scale)
            out = {"master": master.astype(np.float32), **{k: p.astype(np.float32) for k, p in zip(self.names[1:], parts)}}
            for value in out.values():
                value *= inverse
        return {k: v.T for k, v in out.items()}

    def _residual_gain(self, first_frame: int, frames: int) -> np.ndarray | None:
        """Per-sample residual gains (channels, frames) for [first_frame, first_frame + frames)."""
        table = self.residual_gains
        if table is None:
            return None
        size = self.gain_block_frames
        lo, hi = first_frame // size, (first_frame + frames - 1) // size
        if lo == hi:
            return table[min(lo, len(table) - 1)][:, None].astype(np.float32)
        index = (np.arange(first_frame, first_frame + frames) // size).clip(0, len(table) - 1)
        return table[index].T.astype(np.float32)

    def decode_to_dir(self, out_dir: Path) -> list[Path]:
        """DIR/master.wav and DIR/<stem>.wav, each written to a temporary name and renamed."""
        import soundfile as sf

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        subtype = {"s16": "PCM_16", "s24": "PCM_24"}.get(self.manifest.sample_format, "FLOAT")
        names = ["master", *self.names[1:]]
        temps = {n: out_dir / f".{n}.wav.partial" for n in names}
        handles = {n: sf.SoundFile(str(p), "w", self.manifest.sample_rate, self.manifest.channels, subtype, format="WAV")
                   for n, p in temps.items()}
        digests = {n: hashlib.sha256() for n in names}
        try:
            for block in self.blocks(integer=self.integer):
                for name, data in block.items():
                    if self.integer:
                        digests[name].update(np.ascontiguousarray(data, dtype=np.int32).tobytes())
                        shift = 16 if self.manifest.sample_format == "s16" else 8
                        handles[name].write((np.clip(data, -(2 ** 31 >> shift), (2 ** 31 >> shift) - 1) << shift).astype(np.int32))
                    else:
                        handles[name].write(data)
        except BaseException:
            for name, handle in handles.items():
                handle.close()
                temps[name].unlink(missing_ok=True)
            raise
        if self.integer:
            expected = {"master": self.manifest.master_sha256_pcm,
                        **{s.name: s.sha256_pcm for s in self.manifest.stems}}
            bad = [n for n in names if expected.get(n) and digests[n].hexdigest() != expected[n]]
            if bad:
                for name, handle in handles.items():
                    handle.close()
                    temps[name].unlink(missing_ok=True)
                raise CodecError(f"{self.path}: lossless tracks {bad} decode to PCM that does not match the "
                                 "hashes stored at encoding: the file is corrupt")
        final = []
        for name, handle in handles.items():
            handle.close()
            target = out_dir / f"{name}.wav"
            os.replace(temps[name], target)
            final.append(target)
        return final

    def info(self) -> dict:
        m = self.manifest
        return {"file": str(self.path), "bytes": self.path.stat().st_size, "version": m.version, "mode": m.mode,
                "sample_rate": m.sample_rate, "channels": m.channels, "duration_s": round(m.duration_s, 3),
                "stems": [{"name": s.name, "role": s.role, "codec": s.codec, "bitrate_bps": s.bitrate_bps,
                           "loudness_lufs": s.loudness_lufs} for s in m.stems],
                "residual": {k: v for k, v in m.residual.items() if k != "gains"},
                "mastering": {k: v for k, v in m.mastering.items() if k not in ("fir", "envelope")},
                "loudness_lufs": m.loudness_lufs,
                "contexts": sorted(m.contexts), "limits": {k: v for k, v in LIMITS.items()}}
