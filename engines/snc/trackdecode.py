"""The SNC reader's track decoding: a track's packets decode in order into one planar array
per batch (``decode_chunk``), and ``decode_side_by_side`` runs the tracks on a pool of
threads, batches ahead of the caller. FFmpeg's decoders and numpy's copies run without the
GIL, so the tracks decode on every core while the caller mixes what came before."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np

from engines.snc.planar import frame_planes

__all__ = ["Chunk", "decode_chunk", "decode_side_by_side"]

# Packets read ahead per track and batch (120 ms Opus packets: about 1 s), and batches in
# flight per track while the caller mixes (each track's batches still decode one after the other).
BATCH_PACKETS = 8
DEPTH = 2


@dataclass
class Chunk:
    """What a batch of one track's packets decoded to: ``data`` (channels, frames) in the
    buffers' dtype, the frames of every packet one after the other; ``packet`` the packet of
    its first frame and ``first_samples`` that frame's length (to place it in time). A packet
    that failed to decode ends the chunk: ``failed`` and ``error`` name it."""

    packet: av.Packet | None = None
    first_samples: int = 0
    data: np.ndarray | None = None
    failed: av.Packet | None = None
    error: av.error.FFmpegError | None = None


def decode_chunk(stream: av.audio.stream.AudioStream, packets: list[av.Packet], channels: int, dtype: type,
                 integer: bool) -> Chunk:
    """Decode ``packets`` (of ``stream``, in order) into one planar array. Planar float
    frames (Opus) and packed s32 (SNC's 24-bit FLAC, ``integer``: shifted to its own scale)
    are read straight from the frames' buffers; other layouts through ``frame_planes``, the
    values cast to ``dtype`` as a track buffer casts them."""
    frames: list[av.AudioFrame] = []
    chunk = Chunk()
    for packet in packets:
        try:
            decoded = stream.decode(packet)
        except av.error.FFmpegError as exc:
            chunk.failed, chunk.error = packet, exc
            break
        if decoded and chunk.packet is None:
            chunk.packet, chunk.first_samples = packet, decoded[0].samples
        frames.extend(decoded)
    sizes = [frame.samples for frame in frames]
    total = sum(sizes)
    if not total:
        return chunk
    data = np.empty((channels, total), dtype)
    rows = list(data)
    at = 0
    for frame, samples in zip(frames, sizes):
        end = at + samples
        name = frame.format.name
        if name == "fltp" and not integer:
            for row, plane in zip(rows, frame.planes):
                row[at:end] = np.frombuffer(plane, np.float32, samples)
        elif name == "s32" and integer:
            part = data[:, at:end]
            part[...] = np.frombuffer(frame.planes[0], np.int32, samples * channels).reshape(samples, channels).T
            part >>= 8
        else:
            planes = frame_planes(frame, channels, integer)
            if isinstance(planes, list):
                for row, plane in zip(rows, planes):
                    row[at:end] = plane
            else:
                data[:, at:end] = planes
        at = end
    chunk.data = data
    return chunk


def decode_side_by_side(container: av.container.InputContainer, streams: list, channels: int, dtype: type,
                        integer: bool, pool: ThreadPoolExecutor | None, one_by_one: bool = False,
                        cancel: threading.Event | None = None
                        ) -> Iterator[tuple[int, list[av.Packet], Chunk | None]]:
    """Every track's packets in batches, in file order per track: ``(slot, packets, chunk)``,
    ``slot`` the track's place in ``streams``. ``one_by_one``: a packet at a time and chunk
    None (the caller decodes it, as salvage must). Else each batch comes decoded: without a
    pool here, with one ``DEPTH`` batches of every track decoding ahead on the pool's threads
    (a track's batches one after the other, each waiting for the one before). Once ``cancel``
    is set nothing more comes, and the batches in flight that have not begun are not decoded."""
    slots = {s.index: i for i, s in enumerate(streams)}
    packets = container.demux(*streams)

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    if one_by_one:
        yield from itertools.takewhile(lambda _: not cancelled(),
                                       ((slots[packet.stream.index], [packet], None) for packet in packets))
        return
    if pool is None:
        while not cancelled() and (read := list(itertools.islice(packets, BATCH_PACKETS * len(streams)))):
            for slot, batch in sorted(_by_track(read, slots).items()):
                if cancelled():
                    return
                yield slot, batch, decode_chunk(streams[slot], batch, channels, dtype, integer)
        return
    last: dict[int, Future] = {}

    def decode(slot: int, batch: list[av.Packet], before: Future | None) -> Chunk:
        if before is not None:
            before.result()  # (this track's previous batch: its decoder state comes first)
        if cancelled():
            return Chunk()  # (never yielded)
        return decode_chunk(streams[slot], batch, channels, dtype, integer)

    def submit() -> list[tuple[int, list[av.Packet], Future]] | None:
        read = [] if cancelled() else list(itertools.islice(packets, BATCH_PACKETS * len(streams)))
        if not read:
            return None
        jobs = []
        for slot, batch in sorted(_by_track(read, slots).items()):
            future = pool.submit(decode, slot, batch, last.get(slot))
            last[slot] = future
            jobs.append((slot, batch, future))
        return jobs

    pending = [jobs for jobs in (submit() for _ in range(DEPTH)) if jobs is not None]
    try:
        while pending:
            jobs = pending.pop(0)
            results = [(slot, batch, future.result()) for slot, batch, future in jobs]
            more = submit()  # the next batches decode while the caller mixes these
            if more is not None:
                pending.append(more)
            for result in results:
                if cancelled():
                    return
                yield result
    finally:
        for jobs in pending:
            for _, _, future in jobs:
                future.cancel()


def _by_track(packets: list[av.Packet], slots: dict[int, int]) -> dict[int, list[av.Packet]]:
    tracks: dict[int, list[av.Packet]] = {}
    for packet in packets:
        tracks.setdefault(slots[packet.stream.index], []).append(packet)
    return tracks
