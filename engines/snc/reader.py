"""The SNC reader: validates a file before trusting it, then decodes every track in step,
block by block (bounded memory whatever the length), from the start or from any time."""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy import fft as sfft

from core.errors import CodecError
from engines.snc.avio import workers
from engines.snc.integrity import Damage, ScanReport, packet_ms, scan
from engines.snc.manifest import LIMITS, Manifest, manifest_crc32
from engines.snc.mastering import MasteringModel
from engines.snc.pcm import INT_SCALE
from engines.snc.planar import TrackBuffer
from engines.snc.trackdecode import decode_chunk, decode_side_by_side

__all__ = ["SncReader"]

_EXPECTED_CODEC = {"flac": "flac", "opus": "opus"}
# Opus needs 80 ms of pre-roll after a seek to decode exactly.
_PREROLL_S = 0.1
# A track decoded this far ahead of the others means a file not interleaved in time (SNC's
# writer interleaves packets by time): refused rather than buffered without bound.
_MAX_SKEW_S = 30
_V1_OPUS_PACKET_FRAMES = 960
# A track's decoded data may end this many frames before the claimed length (Opus and FLAC
# tracks written by SNC cover it; this is slack for other writers' rounding).
_END_SLACK_FRAMES = 1024


def _damaged_ms(damage: list[Damage], tracks: int) -> list[list[tuple[float, float]]]:
    """Per track, the damaged spans in milliseconds (packets starting inside are left out)."""
    spans: list[list[tuple[float, float]]] = [[] for _ in range(tracks)]
    for item in damage:
        if item.end_s > item.start_s and 0 <= item.track < tracks:
            spans[item.track].append((item.start_s * 1000.0, item.end_s * 1000.0))
    return spans


class SncReader:
    """Open with ``SncReader(path)``; ``manifest`` describes it; ``blocks()`` yields
    ``{"master": ..., "<stem>": ...}`` arrays of shape (frames, channels), float in -1..1
    (``integer=True`` in lossless mode gives the exact integer PCM). ``threads``: how many
    tracks decode at once (default: the cores this process may use, ``avio.workers``)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise CodecError(f"threads {threads!r}: a whole number, 1 or more")
        self.threads = workers() if threads is None else threads
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
            stored_crc = container.metadata.get("SNC_MANIFEST_CRC32") or container.metadata.get("snc_manifest_crc32")
            if stored_crc is not None and stored_crc.strip().lower() != manifest_crc32(text):
                raise CodecError(f"{self.path}: the manifest does not match its checksum (damaged file)")
            self.manifest = Manifest.from_json(text, f"{self.path} manifest")
            if self.manifest.version >= 3 and stored_crc is None:
                raise CodecError(f"{self.path}: a version {self.manifest.version} file without its manifest "
                                 "checksum (tag SNC_MANIFEST_CRC32): damaged or not written by SNC")
            streams = container.streams.audio
            expected = self.manifest.track_names
            if len(streams) != len(expected):
                raise CodecError(f"{self.path}: {len(streams)} audio tracks but the manifest lists "
                                 f"{len(self.manifest.stems)} stems + residual"
                                 f"{' + mix track' if self.manifest.mix else ''}")
            codecs = self.manifest.track_codecs
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
        # The tracks decoding reads (the mix track, last when present, is only scanned).
        self.names = ["residual", *(s.name for s in self.manifest.stems)]
        self.packet_frames = [self.manifest.residual.get("packet_frames"),
                              *(s.packet_frames for s in self.manifest.stems),
                              *([self.manifest.mix.get("packet_frames")] if self.manifest.mix else [])]
        if self.manifest.version == 1:  # v1 wrote Opus in libopus's default 20 ms packets, without packet sizes
            codecs = [self.manifest.residual.get("codec"), *(s.codec for s in self.manifest.stems)]
            self.packet_frames = [_V1_OPUS_PACKET_FRAMES if c == "opus" and f is None else f
                                  for c, f in zip(codecs, self.packet_frames)]
        self.integer = self.manifest.mode == "lossless"
        self.scale = INT_SCALE.get(self.manifest.sample_format, 1.0) if self.integer else 1.0
        self.model = MasteringModel.from_manifest(self.manifest.mastering, self.manifest.channels,
                                                  self.manifest.frames, f"{self.path} mastering")
        # (the manifest's validation checked the table's shape and values)
        self.gain_block_frames = int(self.manifest.residual.get("gain_block_frames") or 48000)
        table = self.manifest.residual.get("gains")
        self.residual_gains = None if table is None else \
            np.asarray(table, dtype=np.float64).reshape(-1, self.manifest.channels)
        self._scan: ScanReport | None = None

    def scan(self) -> ScanReport:
        """Demux the whole file (no decoding) and check its tracks against the manifest: the
        claimed length, gaps, and in format 3 every checksum group. Cached."""
        if self._scan is None:
            self._scan = scan(self.path, self.manifest, self.packet_frames)
        return self._scan

    def check_intact(self) -> None:
        """Raise CodecError naming the first damaged track and span (``scan``)."""
        report = self.scan()
        if report.damage:
            first = report.damage[0]
            more = f" (and {len(report.damage) - 1} more damaged spans)" if len(report.damage) > 1 else ""
            raise CodecError(f"{self.path}: damaged: {first.describe()}{more}; `scorebridge snc verify` lists "
                             "every span, `snc decode --salvage` writes what is intact")

    def blocks(self, block_frames: int = 48000, start_s: float = 0.0, duration_s: float | None = None,
               integer: bool = False, with_residual: bool = True,
               salvage: list[Damage] | None = None, cancel: threading.Event | None = None
               ) -> Iterator[dict[str, np.ndarray]]:
        """Decode from ``start_s`` for ``duration_s`` (None = to the end), in step.
        ``with_residual=False`` gives the mastering model of the stems alone as "master".
        A file whose tracks end before the claimed length raises CodecError when the end is
        reached. ``salvage`` (a list of damaged spans from ``scan``, possibly empty) instead
        leaves out the packets of those spans (silence), skips packets that fail to decode
        (appending their spans to the list) and ends where the tracks' data ends. Once ``cancel``
        is set the decoding ends within a batch, the batches in flight left undecoded (a
        player's seek: the old position's decoder stops taking the cores from the new one)."""
        try:
            yield from self._blocks(block_frames, start_s, duration_s, integer, with_residual, salvage, cancel)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise CodecError(f"{self.path}: cannot decode: {exc}") from None

    def _blocks(self, block_frames: int, start_s: float, duration_s: float | None, integer: bool,
                with_residual: bool, salvage: list[Damage] | None,
                cancel: threading.Event | None) -> Iterator[dict[str, np.ndarray]]:
        if not isinstance(block_frames, int) or block_frames <= 0 or block_frames > 10 * self.manifest.sample_rate:
            raise CodecError(f"block of {block_frames} frames is outside 1..{10 * self.manifest.sample_rate}")
        if not math.isfinite(start_s) or (duration_s is not None and not math.isfinite(duration_s)):
            raise CodecError(f"start {start_s} s and duration {duration_s} s must be finite numbers")
        rate, channels, frames = self.manifest.sample_rate, self.manifest.channels, self.manifest.frames
        start = int(round(max(0.0, start_s) * rate))
        if start >= frames:
            raise CodecError(f"start {start_s} s is past the end ({self.manifest.duration_s:.3f} s)")
        end = frames if duration_s is None else min(frames, start + int(round(max(0.0, duration_s) * rate)))
        dtype = np.int32 if self.integer else np.float32  # (24-bit PCM in lossless files)
        history, ahead = self.model.history, self.model.lookahead
        skips = _damaged_ms(salvage or [], len(self.names))
        # The model's filter needs `history` frames of the mix before `start`: decode from there.
        # Every track's buffer holds `history` frames before `done` (silence before `first`).
        first = max(0, start - history)
        with av.open(str(self.path)) as container:
            streams = list(container.streams.audio)[:len(self.names)]
            buffers = [TrackBuffer(channels, dtype, history, 2 * (block_frames + history + ahead) + 16384)
                       for _ in streams]
            positions: list[int | None] = [None] * len(streams)
            if first > 0:
                container.seek(int(max(0.0, first / rate - _PREROLL_S) * av.time_base), any_frame=False)
            done = first
            bases = [Fraction(s.time_base) for s in streams]
            delays = [int(getattr(s.codec_context, "delay", 0) or 0) for s in streams]
            skew = history + block_frames + ahead + _MAX_SKEW_S * rate

            def ready() -> Iterator[dict[str, np.ndarray]]:
                nonlocal done
                while done < end and not (cancel is not None and cancel.is_set()):
                    n = min(block_frames, end - done, start - done if done < start else block_frames)
                    if not all(b.size >= history + n + ahead for b in buffers):
                        return
                    block = self._step(buffers, n, done, integer and self.integer, with_residual, done >= start)
                    for buffer in buffers:
                        buffer.advance(n)
                    if block is not None:
                        yield block
                    done += n

            def gap(slot: int, frames_missing: int) -> Iterator[dict[str, np.ndarray]]:
                """Silence for data missing inside a track, a block at a time (bounded memory)."""
                while frames_missing > 0:
                    step = min(frames_missing, block_frames)
                    buffers[slot].pad(step)
                    frames_missing -= step
                    yield from ready()
                    if buffers[slot].size > skew:
                        raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) runs more than "
                                         f"{_MAX_SKEW_S} s ahead of the others near {done / rate:.3f} s")

            # Salvage decodes packet by packet (a lost packet resets its track's decoder);
            # otherwise the tracks decode side by side, a batch of packets at a time.
            threads = min(self.threads, len(streams))
            pool = ThreadPoolExecutor(threads, thread_name_prefix="snc-read") \
                if salvage is None and threads > 1 else None
            batches = decode_side_by_side(container, streams, channels, dtype, self.integer, pool,
                                          one_by_one=salvage is not None, cancel=cancel)
            try:
                for slot, packets, chunk in batches:
                    if chunk is None:  # one packet, decoded here
                        packet = packets[0]
                        if skips[slot] and packet.pts is not None:
                            ms = packet_ms(packet.pts, bases[slot])
                            if any(lo <= ms < hi for lo, hi in skips[slot]):
                                self._lose(streams[slot], slot, packet, bases, salvage,
                                           "checksum mismatch (damaged data)")
                                positions[slot] = None  # the next packet is placed again, after a gap
                                continue
                        chunk = decode_chunk(streams[slot], packets, channels, dtype, self.integer)
                    buffer = buffers[slot]
                    if chunk.data is not None:
                        at = positions[slot]  # frames follow each other: only the first needs its time
                        have = done - history + buffer.size  # where this track's data ends
                        if at is None:
                            at = self._place(chunk.packet, chunk.first_samples, slot, delays[slot], rate)
                            if at > have:
                                yield from gap(slot, at - have)
                                have = done - history + buffer.size
                        positions[slot] = at + chunk.data.shape[1]
                        buffer.push(chunk.data, have - at if at < have else 0)  # (pre-roll after a seek: left out)
                    if chunk.error is not None:
                        if salvage is None:
                            where = float(chunk.failed.pts or 0) * float(bases[slot])
                            raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) is corrupt near "
                                             f"{where:.3f} s: {chunk.error}")
                        self._lose(streams[slot], slot, chunk.failed, bases, salvage,
                                   f"a packet does not decode ({chunk.error})")
                        positions[slot] = None
                    if buffer.size >= history + block_frames + ahead or done >= end:
                        yield from ready()  # (a block needs every track; checked only when this one has one)
                    if done >= end:
                        return
                    if buffer.size > skew:
                        raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) runs more than "
                                         f"{_MAX_SKEW_S} s ahead of the others near {done / rate:.3f} s "
                                         "(tracks not interleaved)")
            except av.error.FFmpegError as exc:
                if salvage is None:
                    raise CodecError(f"{self.path}: the container is unreadable near {done / rate:.3f} s: {exc}") \
                        from None
            finally:
                batches.close()
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            if cancel is not None and cancel.is_set():
                return
            # The end of the file. A track may stop short of `end` by the rounding of its last
            # packet; more than that is a cut (or a false length): an error, or in salvage the
            # decoding ends where the longest track's data ends.
            have = [done - history + b.size for b in buffers]
            short = [i for i, h in enumerate(have) if h < end - _END_SLACK_FRAMES]
            if short and end == frames:
                if salvage is None:
                    slot = min(short, key=lambda i: have[i])
                    raise CodecError(f"{self.path}: track {slot} ({self.names[slot]}) ends at "
                                     f"{max(have[slot], 0) / rate:.3f} s but the manifest claims "
                                     f"{frames / rate:.3f} s (file cut short, or a false length); "
                                     "`snc decode --salvage` writes what is intact")
                end = max(min(end, max(have)), done)
            while done < end:  # silence after the last packets, one block at a time
                need = history + min(block_frames, end - done) + ahead
                for buffer in buffers:
                    buffer.pad(need - buffer.size)
                yield from ready()

    def _lose(self, stream: av.audio.stream.AudioStream, slot: int, packet: av.Packet, bases: list[Fraction],
              salvage: list[Damage], problem: str) -> None:
        """Salvage: leave ``packet`` out and note its span. The decoder starts afresh after it,
        as after a seek (a stateful codec decoding past a lost packet would mix the states);
        an Opus track's span then runs on over the pre-roll that decoding needs to be exact."""
        start = float((packet.pts or 0) * bases[slot])
        end = start + self._packet_s(packet, slot, bases)
        if stream.codec_context.name == "opus":
            end += _PREROLL_S
        stream.codec_context.flush_buffers()
        salvage.append(Damage(slot, self.names[slot], round(start, 3), round(end, 3), problem))

    def _packet_s(self, packet: av.Packet, slot: int, bases: list[Fraction]) -> float:
        """A packet's length in seconds (its own duration, else the track's packet size)."""
        if packet.duration:
            return float(packet.duration * bases[slot])
        return (self.packet_frames[slot] or 0) / self.manifest.sample_rate

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
            out = {"master": master.astype(np.float32, copy=False),
                   **{k: p.copy() for k, p in zip(self.names[1:], parts)}}
        elif integer:
            out = {"master": master, **{k: p.astype(np.int64) for k, p in zip(self.names[1:], parts)}}
        else:  # a lossless file read as float: integers below 2^24 times a power of two, exact in float32
            inverse = np.float32(1.0 / self.scale)
            out = {"master": master.astype(np.float32),
                   **{k: p.astype(np.float32) for k, p in zip(self.names[1:], parts)}}
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

    def decode_to_dir(self, out_dir: Path, salvage: bool = False) -> tuple[list[Path], list[Damage]]:
        """DIR/master.wav and DIR/<stem>.wav (``engines.snc.decode_dir``); returns them and the
        damage found. A damaged file raises CodecError before anything is written, unless
        ``salvage``: then the damaged spans are silent and the returned list says what is missing."""
        from engines.snc.decode_dir import decode_to_dir

        return decode_to_dir(self, Path(out_dir), salvage)

    def expected_hashes(self) -> dict[str, str]:
        """Track name -> SHA-256 of its PCM stored at encoding (lossless files; empty strings otherwise)."""
        return {"master": self.manifest.master_sha256_pcm, **{s.name: s.sha256_pcm for s in self.manifest.stems}}

    def refuse_self_overwrite(self, outputs: list[Path]) -> None:
        source = self.path.resolve()
        for output in outputs:
            if output.resolve() == source or (output.exists() and os.path.samefile(output, self.path)):
                raise CodecError(f"output {output} is the input file {self.path}; decode into another folder")

    def verify(self) -> dict:
        """Scan the file and decode every track (nothing written); in lossless files compare
        the PCM hashes too. Returns ``{"intact": bool, "damage": [...], ...}``."""
        report = self.scan()
        damage = list(report.damage)
        decoded = False
        if not damage:
            names = ["master", *self.names[1:]]
            digests = {n: hashlib.sha256() for n in names}
            try:
                for block in self.blocks(integer=self.integer):
                    if self.integer:
                        for name, data in block.items():
                            digests[name].update(np.ascontiguousarray(data, dtype=np.int32).tobytes())
                decoded = True
            except CodecError as exc:
                damage.append(Damage(-1, "all", 0.0, round(self.manifest.duration_s, 3), str(exc)))
            if decoded and self.integer:
                expected = self.expected_hashes()
                for index, name in enumerate(names):
                    if expected.get(name) and digests[name].hexdigest() != expected[name]:
                        damage.append(Damage(index if index else -1, name, 0.0, round(self.manifest.duration_s, 3),
                                             "decoded PCM does not match the hash stored at encoding"))
        return {"file": str(self.path), "version": self.manifest.version, "mode": self.manifest.mode,
                "duration_s": round(self.manifest.duration_s, 3), "intact": not damage,
                "integrity": "crc32 per block" if report.checked else
                f"none: a version {self.manifest.version} file has no per-block checksums",
                "decoded": decoded, "pcm_hashes_checked": decoded and self.integer,
                "damage": [vars(d) for d in damage]}

    def info(self) -> dict:
        m = self.manifest
        return {"file": str(self.path), "bytes": self.path.stat().st_size, "version": m.version, "mode": m.mode,
                "integrity": "crc32 per block" if m.integrity else "none (format before 3)",
                "sample_rate": m.sample_rate, "channels": m.channels, "duration_s": round(m.duration_s, 3),
                "stems": [{"name": s.name, "role": s.role, "codec": s.codec, "bitrate_bps": s.bitrate_bps,
                           "loudness_lufs": s.loudness_lufs} for s in m.stems],
                "residual": {k: v for k, v in m.residual.items() if k != "gains"},
                "mastering": {k: v for k, v in m.mastering.items() if k not in ("fir", "envelope")},
                "loudness_lufs": m.loudness_lufs,
                "contexts": sorted(m.contexts), "mix_track": m.mix,
                "limits": {k: v for k, v in LIMITS.items()}}
