"""SNC integrity: per-group packet checksums (format 3) and the scan that checks a file's
tracks against its manifest before anything is decoded or written (docs/snc.md).

A track's packets are grouped by time: group k holds the packets whose presentation time lies
in [k * group_ms, (k + 1) * group_ms) (the packets before 0 in group 0). A group's CRC32 runs
over each packet's time (int64 ms), size (uint32) and bytes, in file order, so a changed,
lost, added or moved packet changes its group's checksum; group 0's starts from the track's
codec header (Opus pre-skip and output gain, FLAC stream info), which decoding also depends
on. Demuxing is cheap (thousands of times real time), so the scan reads every packet of every
track; it decodes nothing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from core.errors import CodecError
from engines.snc.manifest import INTEGRITY_ALGORITHM, Manifest, pack_crcs, unpack_crcs

__all__ = ["Damage", "ScanReport", "merge_spans", "packet_ms", "scan", "track_integrity"]

# Consecutive packets of a track may sit this far apart (or overlap) in their millisecond
# times before the scan calls it a gap: Matroska rounds every time to the millisecond.
GAP_TOLERANCE_MS = 2
# A track may end this much before the length its manifest claims (rounding of the last
# packet's time and duration) before the scan calls the file cut.
END_TOLERANCE_MS = 20
_HEADER = struct.Struct("<qI")


@dataclass
class Damage:
    """A span of one track that is missing or does not match its checksum."""

    track: int
    name: str
    start_s: float
    end_s: float
    problem: str

    def describe(self) -> str:
        return f"track {self.track} ({self.name}) {self.start_s:.3f}-{self.end_s:.3f} s: {self.problem}"


@dataclass
class ScanReport:
    """What ``scan`` found: ``damage`` (empty when intact), ``checked`` = per-block
    checksums were compared (format 3), the end of each track's data in seconds."""

    checked: bool
    damage: list[Damage] = field(default_factory=list)
    track_end_s: list[float] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.damage

    def to_dict(self) -> dict:
        return {"intact": self.intact, "checked": self.checked, "damage": [asdict(d) for d in self.damage],
                "track_end_s": [round(e, 3) for e in self.track_end_s], "packets": self.packets}


def packet_ms(pts: int | None, time_base: Fraction) -> int | None:
    """A packet's time in whole milliseconds (floor), None when it has none."""
    if pts is None:
        return None
    return (pts * time_base.numerator * 1000) // time_base.denominator


def _group(ms: int | None, group_ms: int, last: int) -> int:
    return last if ms is None else max(0, ms // group_ms)


def _update(crc: int, ms: int | None, packet: av.Packet) -> int:
    crc = zlib.crc32(_HEADER.pack(-1 if ms is None else ms, packet.size), crc)
    return zlib.crc32(packet, crc)


def track_integrity(path: Path, group_ms: int) -> dict:
    """The integrity entry of the single audio track of ``path`` (the encoder's temporary
    track files; merging copies their packets unchanged, times included)."""
    count = 0
    group = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        base = Fraction(stream.time_base)
        crcs = {0: header_crc(stream)}
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:  # the demuxer's end-of-stream marker
                continue
            ms = packet_ms(packet.pts, base)
            group = _group(ms, group_ms, group)
            crcs[group] = _update(crcs.get(group, 0), ms, packet)
            count += 1
    if not count:
        raise CodecError(f"{path}: the coded track holds no packets")
    return {"packets": count, "crc32": pack_crcs([crcs.get(g, 0) for g in range(max(crcs) + 1)])}


def header_crc(stream: av.audio.stream.AudioStream) -> int:
    """The checksum of a track's codec header, where group 0's checksum starts."""
    return zlib.crc32(bytes(stream.codec_context.extradata or b""))


def integrity_table(paths: Iterable[Path], group_ms: int) -> dict:
    return {"algorithm": INTEGRITY_ALGORITHM, "group_ms": group_ms,
            "tracks": [track_integrity(p, group_ms) for p in paths]}


def merge_spans(damage: list[Damage]) -> list[Damage]:
    """Overlapping or touching spans of the same track become one (problems joined)."""
    out: list[Damage] = []
    for item in sorted(damage, key=lambda d: (d.track, d.start_s, d.end_s)):
        last = out[-1] if out else None
        if last is not None and last.track == item.track and item.start_s <= last.end_s + 1e-6:
            last.end_s = max(last.end_s, item.end_s)
            if item.problem not in last.problem:
                last.problem += f"; {item.problem}"
        else:
            out.append(Damage(**asdict(item)))
    return out


def scan(path: Path, manifest: Manifest, packet_frames: list[int | None]) -> ScanReport:
    """Demux every packet of ``path`` (no decoding) and compare the tracks with ``manifest``:
    each track must run from the start to the claimed length without gaps, and (format 3)
    every checksum group must match. Damage is reported per track and time span."""
    names = manifest.track_names
    duration = manifest.duration_s
    rate = manifest.sample_rate
    table = manifest.integrity
    group_ms = table["group_ms"] if table else 0
    expected = [unpack_crcs(t["crc32"], f"{path} integrity track {i}") for i, t in enumerate(table["tracks"])] \
        if table else []
    crcs: list[dict[int, int]] = [{} for _ in names]
    counts = [0] * len(names)
    ends: list[float | None] = [None] * len(names)  # end of the last packet (ms)
    groups = [0] * len(names)
    damage: list[Damage] = []

    def hurt(slot: int, start_ms: float, end_ms: float, problem: str) -> None:
        start_s = min(max(start_ms, 0.0) / 1000.0, duration)
        end_s = min(max(end_ms / 1000.0, start_s), duration)
        damage.append(Damage(slot, names[slot], round(start_s, 3), round(end_s, 3), problem))

    try:
        with av.open(str(path)) as container:
            streams = list(container.streams.audio)
            bases = [Fraction(s.time_base) for s in streams]
            slots = {s.index: i for i, s in enumerate(streams)}
            if table:
                for slot, stream in enumerate(streams[:len(names)]):
                    crcs[slot][0] = header_crc(stream)
            try:
                for packet in container.demux(*streams):
                    if packet.size == 0 and packet.pts is None:
                        continue
                    slot = slots[packet.stream.index]
                    ms = packet_ms(packet.pts, bases[slot])
                    if table:
                        groups[slot] = _group(ms, group_ms, groups[slot])
                        crcs[slot][groups[slot]] = _update(crcs[slot].get(groups[slot], 0), ms, packet)
                    counts[slot] += 1
                    if ms is None:
                        hurt(slot, (ends[slot] or 0), (ends[slot] or 0), "a packet without a time")
                        continue
                    length = packet_ms(packet.duration, bases[slot]) if packet.duration else None
                    if not length:
                        grid = packet_frames[slot]
                        length = 1000 * grid // rate if grid else 0
                    end = ends[slot]
                    if end is None:
                        if ms > GAP_TOLERANCE_MS:
                            hurt(slot, 0, ms, f"the track starts at {ms / 1000:.3f} s (data missing before)")
                    elif ms > end + GAP_TOLERANCE_MS:
                        hurt(slot, end, ms, "packets missing (a gap in the track)")
                    elif ms < end - GAP_TOLERANCE_MS:
                        hurt(slot, ms, end, "packets out of order (overlapping times)")
                    ends[slot] = max(end or 0, ms + length)
            except av.error.FFmpegError as exc:
                stop = max((e for e in ends if e is not None), default=0)
                for slot in range(len(names)):
                    hurt(slot, ends[slot] or 0, duration * 1000, f"the container is unreadable after "
                         f"{stop / 1000:.3f} s ({exc})")
    except (av.error.FFmpegError, OSError) as exc:
        raise CodecError(f"{path}: cannot read the container: {exc}") from None
    claimed_ms = duration * 1000
    for slot, end in enumerate(ends):
        if end is None:
            hurt(slot, 0, claimed_ms, "the track holds no packets")
        elif end < claimed_ms - END_TOLERANCE_MS:
            hurt(slot, end, claimed_ms, f"the track ends at {end / 1000:.3f} s but the manifest claims "
                 f"{duration:.3f} s (file cut short, or a false length)")
    if table:
        for slot, want in enumerate(expected):
            got = crcs[slot]
            for group in range(max(len(want), max(got, default=-1) + 1)):
                stored = want[group] if group < len(want) else None
                if stored is None:
                    hurt(slot, group * group_ms, (group + 1) * group_ms, "data past the end of the checksum table")
                elif got.get(group, 0) != stored:
                    hurt(slot, group * group_ms, (group + 1) * group_ms, "checksum mismatch (damaged data)")
            if counts[slot] != table["tracks"][slot]["packets"] and not any(d.track == slot for d in damage):
                hurt(slot, 0, claimed_ms, f"{counts[slot]} packets, the manifest says "
                     f"{table['tracks'][slot]['packets']}")
    return ScanReport(checked=bool(table), damage=merge_spans(damage),
                      track_end_s=[(e or 0) / 1000.0 for e in ends], packets=counts)
