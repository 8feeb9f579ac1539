"""PyAV plumbing for SNC: encode one track to a temporary Matroska file, decode a track in
fixed-size blocks, and merge tracks into one container without re-encoding."""

from __future__ import annotations

import heapq
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from core.errors import CodecError
from engines.snc.planar import TrackBuffer

__all__ = ["LAYOUTS", "OPUS_COMPLEXITY", "TrackWriter", "decode_blocks", "decode_in_step", "encode_decoded",
           "merge_tracks", "parallel", "workers"]

OPUS_COMPLEXITY = 5
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def workers() -> int:
    """Threads for work on independent tracks: the cores this process may run on
    (``$SCOREBRIDGE_SNC_THREADS`` caps it; 1 runs everything in the calling thread)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    cap = os.environ.get("SCOREBRIDGE_SNC_THREADS", "")
    return max(1, min(cores, int(cap))) if cap.isdigit() and int(cap) > 0 else max(1, cores)


def parallel(function: Callable, items: Iterable) -> list:
    """``[function(item) for item in items]`` on ``workers()`` threads (FFmpeg's codecs,
    libsndfile, hashlib and numpy's large operations release the GIL)."""
    items = list(items)
    count = min(workers(), len(items))
    if count <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(count, thread_name_prefix="snc") as pool:
        return list(pool.map(function, items))


def decode_in_step(paths: list[Path], block_frames: int, total_frames: int, integer: bool) -> Iterator[list]:
    """``zip(*(decode_blocks(p, 0, ...) for p in paths))``, each track's next block decoded on
    its own thread."""
    decoders = [decode_blocks(p, 0, block_frames, total_frames, integer) for p in paths]
    count = min(workers(), len(decoders))
    if count <= 1:
        yield from (list(parts) for parts in zip(*decoders))
        return
    pool = ThreadPoolExecutor(count, thread_name_prefix="snc-decode")
    try:
        def submit() -> list:
            return [pool.submit(next, decoder, None) for decoder in decoders]

        pending = submit()
        while True:
            parts = [future.result() for future in pending]
            if any(part is None for part in parts):
                return
            pending = submit()  # the next blocks decode while the caller works on these
            yield parts
    finally:
        pool.shutdown(wait=True)  # (no decoder runs when they are closed)
        for decoder in decoders:
            decoder.close()


class TrackWriter:
    """Encodes (frames, channels) blocks into one audio track of a new Matroska file.

    ``codec`` is ``flac`` (integer blocks, stored as 24-bit so sums and residuals fit) or
    ``opus`` (float blocks; ``bitrate_bps``)."""

    def __init__(self, path: Path, codec: str, sample_rate: int, channels: int, bitrate_bps: int | None = None,
                 complexity: int = OPUS_COMPLEXITY) -> None:
        # bitexact: no random segment UID and no muxing date, so an input encodes to the same bytes
        # wherever it runs (a batch on this machine and on a Ray cluster write identical files)
        self.container = av.open(str(path), "w", format="matroska", options={"fflags": "+bitexact"})
        self.path = Path(path)
        self.codec = codec
        self.channels = channels
        self.sample_rate = sample_rate
        if codec == "flac":
            self.stream = self.container.add_stream("flac", rate=sample_rate, layout=LAYOUTS[channels])
            self.stream.codec_context.format = "s32"
            self.stream.codec_context.options = {"compression_level": "8"}
        elif codec == "opus":
            if channels > 2:
                raise CodecError(f"lossy SNC modes take mono or stereo tracks, not {channels} channels "
                                 "(use --mode lossless for multichannel)")
            self.stream = self.container.add_stream("libopus", rate=sample_rate, layout=LAYOUTS[channels])
            self.stream.bit_rate = int(bitrate_bps or 96000)
            # 120 ms packets (six 20 ms Opus frames): a sixth of the packets, container overhead and
            # per-packet work of the 20 ms default, and libopus keeps its VBR average on target.
            self.stream.codec_context.options = {"application": "audio", "vbr": "on", "frame_duration": "120",
                                                 "compression_level": str(complexity)}
        else:
            raise CodecError(f"unknown track codec {codec!r}")
        self.pts = 0
        self.tap: Callable[[bytes], None] | None = None  # sees a copy of every packet before it is muxed

    @property
    def packet_frames(self) -> int:
        """Frames per packet (every packet but the last): readers use it to place packets
        exactly after a seek, as Matroska stores times in whole milliseconds."""
        return int(self.stream.codec_context.frame_size)

    def write(self, block: np.ndarray) -> None:
        if self.codec == "flac":
            # 24-bit values left-aligned in s32, packed (1, frames * channels).
            data = (np.asarray(block, dtype=np.int64) << 8).astype(np.int32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format="s32", layout=LAYOUTS[self.channels])
        else:
            # Packed float, libopus's own input format: a C-order block is already interleaved, so
            # neither a transposed copy nor FFmpeg's planar-to-packed conversion is needed (the
            # same samples reach the encoder: the same packets).
            data = np.ascontiguousarray(block, dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format="flt", layout=LAYOUTS[self.channels])
        frame.sample_rate = self.sample_rate
        frame.pts = self.pts
        frame.time_base = Fraction(1, self.sample_rate)
        self.pts += block.shape[0]
        self._mux(self.stream.encode(frame))

    def close(self) -> None:
        self._mux(self.stream.encode(None))
        self.container.close()

    def _mux(self, packets: list) -> None:
        for packet in packets:
            if self.tap is not None:
                self.tap(bytes(packet))
            self.container.mux(packet)


def _blocks(frames: Iterable[av.AudioFrame], channels: int, block_frames: int, total_frames: int,
            integer: bool) -> Iterator[np.ndarray]:
    """Decoded ``frames`` cut into (block_frames, channels) blocks, ``total_frames`` in all (the
    last block padded); each block a fresh array, the transpose of a planar one."""
    buffer = TrackBuffer(channels, np.int64 if integer else np.float32, 0, 2 * block_frames + 16384)
    done = 0
    for frame in frames:
        buffer.push_frame(frame, 0, integer)
        while done < total_frames and buffer.size >= min(block_frames, total_frames - done):
            n = min(block_frames, total_frames - done)
            block = buffer.view(n).copy()
            buffer.advance(n)
            done += n
            yield block.T
    while done < total_frames:
        n = min(block_frames, total_frames - done)
        buffer.pad(n - buffer.size)
        block = buffer.view(n).copy()
        buffer.advance(n)
        done += n
        yield block.T


def decode_blocks(path: Path, stream_index: int, block_frames: int, total_frames: int,
                  integer: bool) -> Iterator[np.ndarray]:
    """Decode one track of ``path`` as (block_frames, channels) blocks, ``total_frames`` in all
    (the last block padded). FLAC tracks come back as int64 in their stored scale, Opus
    tracks as float32. Each block is a fresh array, the transpose of a planar one."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[stream_index]
        yield from _blocks(container.decode(stream), stream.codec_context.channels, block_frames, total_frames,
                           integer)


def encode_decoded(writer: TrackWriter, blocks: Iterable[np.ndarray], block_frames: int,
                   total_frames: int) -> Iterator[np.ndarray]:
    """Encode ``blocks`` into the Opus ``writer`` (and close it) and yield its track decoded, as
    ``decode_blocks`` of the finished file would (the same samples: the same decoder on the
    same packets). With two or more workers the encoder runs on a second thread and its
    packets are decoded in memory as they come, so coding and decoding overlap."""
    if writer.codec != "opus":
        raise ValueError(f"encode_decoded codes Opus tracks, not {writer.codec}")
    if workers() <= 1:
        for block in blocks:
            writer.write(block)
        writer.close()
        yield from decode_blocks(writer.path, 0, block_frames, total_frames, False)
        return
    packets: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    writer.tap = packets.put

    def run() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    break
                writer.write(block)
            writer.close()
        except BaseException as exc:  # handed to the decoding side, which raises it
            packets.put(exc)
        packets.put(None)

    thread = threading.Thread(target=run, name="snc-encode", daemon=True)
    thread.start()

    def frames() -> Iterator[av.AudioFrame]:
        decoder = None
        while (item := packets.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if decoder is None:  # the encoder is open now: its header (pre-skip, channels) is known
                decoder = av.CodecContext.create("opus", "r")  # (the decoder FFmpeg picks for the file)
                decoder.extradata = writer.stream.codec_context.extradata
                decoder.sample_rate = writer.sample_rate
                decoder.layout = LAYOUTS[writer.channels]
            yield from decoder.decode(av.Packet(item))
        if decoder is not None:
            yield from decoder.decode(None)

    try:
        yield from _blocks(frames(), writer.channels, block_frames, total_frames, False)
    finally:
        stop.set()
        thread.join()


def merge_tracks(sources: list[tuple[Path, str]], out_path: Path, tags: dict[str, str],
                 default: int | None = None) -> None:
    """Copy the single audio track of each source file, in time order, into one Matroska file
    with track titles and container tags. No re-encoding. ``default``: the one track flagged
    default (FlagDefault 1, the others 0), the track an ordinary player picks."""
    inputs = [av.open(str(path)) for path, _ in sources]
    try:
        with av.open(str(out_path), "w", format="matroska", options={"fflags": "+bitexact"}) as out:
            for key, value in tags.items():
                out.metadata[key] = value
            streams = []
            for container, (_, title) in zip(inputs, sources):
                stream = out.add_stream_from_template(container.streams.audio[0])
                stream.metadata["title"] = title
                if default is not None:
                    stream.disposition = av.stream.Disposition.default if len(streams) == default \
                        else av.stream.Disposition(0)
                streams.append(stream)

            def packets(index: int) -> Iterator[tuple[float, int, av.Packet]]:
                source = inputs[index].streams.audio[0]
                base = float(source.time_base)  # (PyAV builds a new Fraction at every access)
                for packet in inputs[index].demux(source):
                    dts = packet.dts
                    if dts is None:
                        continue
                    yield dts * base, index, packet

            for _, index, packet in heapq.merge(*(packets(i) for i in range(len(inputs))), key=lambda x: (x[0], x[1])):
                packet.stream = streams[index]
                out.mux(packet)
    finally:
        for container in inputs:
            container.close()
