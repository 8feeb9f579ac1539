"""The SNC manifest: what a file holds, validated strictly on read (docs/snc.md).

The manifest is JSON stored as the Matroska tag ``SNC_MANIFEST`` (format 3 adds the tag
``SNC_MANIFEST_CRC32``). Readers check the format version, the type and range of every field
and every limit before allocating anything, so a hostile file cannot make them allocate
without bound, and a damaged one is refused with the field it got wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import CodecError
from engines.snc.mastering import MasteringModel

__all__ = ["FORMAT_VERSION", "INTEGRITY_ALGORITHM", "LIMITS", "MODES", "Manifest", "StemInfo", "integrity_group_ms",
           "manifest_crc32"]

FORMAT_VERSION = 4
# v1: gain-only mastering model, no FIR/envelope; v2: no per-block integrity table; v3: no mix
# track (the encoder writes 3 when it adds none, so v3 readers read those files).
READABLE_VERSIONS = (1, 2, 3, 4)
MODES = ("lossless", "transparent", "compact")
CODECS = ("flac", "opus")
SAMPLE_FORMATS = ("s16", "s24", "float")
INTEGRITY_ALGORITHM = "crc32"
LIMITS = {
    "max_stems": 32,
    "max_channels": 8,
    "max_duration_s": 4 * 3600,
    "max_manifest_bytes": 1 << 20,
    "sample_rates": (44100, 48000, 88200, 96000),
    "max_name_chars": 64,
    "max_packet_frames": 65536,
    # Checksum groups over all tracks (4 bytes each, base64 in the manifest: at most 128 KiB,
    # beside the envelope's 500 KB and the residual gain table).
    "max_integrity_groups": 24576,
    # The shortest checksum group: a damaged span is located to within this (milliseconds).
    "min_integrity_group_ms": 1000,
    "max_contexts": 64,
    "max_bitrate_bps": 1_000_000,
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]*")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_SHA256 = re.compile(r"(?:[0-9a-f]{64})?")
_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def manifest_crc32(text: str) -> str:
    """The checksum stored beside the manifest (tag ``SNC_MANIFEST_CRC32``), 8 hex digits."""
    return f"{zlib.crc32(text.encode('utf-8')):08x}"


def integrity_group_ms(duration_s: float, tracks: int) -> int:
    """Checksum group length: whole seconds, at least ``min_integrity_group_ms``, long enough
    that all tracks together stay within ``max_integrity_groups`` groups."""
    total_ms = duration_s * 1000.0 * tracks
    seconds = math.ceil(total_ms / (LIMITS["max_integrity_groups"] - 2 * tracks) / 1000.0)
    return max(LIMITS["min_integrity_group_ms"], 1000 * seconds)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if not _is_int(value) or not lo <= value <= hi:
        raise CodecError(f"{what} {value!r} must be a whole number in {lo}..{hi}")
    return value


def _number(value: Any, lo: float, hi: float, what: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not _is_number(value) or not lo <= value <= hi:
        raise CodecError(f"{what} {value!r} must be a finite number in {lo:g}..{hi:g}"
                         f"{' (or null)' if optional else ''}")
    return float(value)


def _choice(value: Any, choices: tuple, what: str) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise CodecError(f"{what} {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _known_keys(data: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CodecError(f"{where}: unknown fields {unknown}")
    missing = sorted(required - set(data))
    if missing:
        raise CodecError(f"{where}: missing fields {missing}")


def check_packet_frames(value: Any, where: str) -> None:
    if value is not None and (not _is_int(value) or not 1 <= value <= LIMITS["max_packet_frames"]):
        raise CodecError(f"{where}: packet size {value!r} is outside 1..{LIMITS['max_packet_frames']} frames")


def _refuse_constant(name: str) -> None:
    raise CodecError(f"{name} is not a number SNC manifests may hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CodecError(f"{text} overflows a 64-bit float")
    return value


@dataclass
class StemInfo:
    name: str
    role: str = "other"
    colour: str = "#808080"
    gain_db: float = 0.0
    pan: float = 0.0
    codec: str = "flac"
    bitrate_bps: int | None = None
    loudness_lufs: float | None = None
    sha256_pcm: str = ""
    packet_frames: int | None = None  # v2: frames per packet of the track (placement after a seek)

    def validate(self, where: str) -> None:
        check_stem_name(self.name, where)
        if not isinstance(self.role, str) or not _WORD.fullmatch(self.role):
            raise CodecError(f"{where}: role {self.role!r} must be a lower-case word of 1-32 characters")
        if not isinstance(self.colour, str) or not _COLOUR.fullmatch(self.colour):
            raise CodecError(f"{where}: colour {self.colour!r} must look like #RRGGBB")
        _number(self.pan, -1.0, 1.0, f"{where}: pan")
        _number(self.gain_db, -96.0, 24.0, f"{where}: gain (dB)")
        _choice(self.codec, CODECS, f"{where}: codec")
        if self.bitrate_bps is not None:
            _int(self.bitrate_bps, 1, LIMITS["max_bitrate_bps"], f"{where}: bitrate (b/s)")
        _number(self.loudness_lufs, -200.0, 30.0, f"{where}: loudness (LUFS)", optional=True)
        if not isinstance(self.sha256_pcm, str) or not _SHA256.fullmatch(self.sha256_pcm):
            raise CodecError(f"{where}: sha256_pcm must be 64 lower-case hex digits or empty")
        check_packet_frames(self.packet_frames, where)


def check_stem_name(name: Any, where: str) -> None:
    """Stem names become file names (DIR/<name>.wav) and labels: letters, digits, space,
    ``_ . -``, never a path separator or a control character."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > LIMITS["max_name_chars"]:
        raise CodecError(f"{where}: stem name {name!r} must be 1-{LIMITS['max_name_chars']} letters, digits, "
                         "space, _ . - (starting with a letter or digit)")
    if name in ("master", "residual"):
        raise CodecError(f"{where}: 'master' and 'residual' are reserved names")


_STEM_FIELDS = {f for f in StemInfo.__dataclass_fields__}
_RESIDUAL_FIELDS = {"codec", "bitrate_bps", "rms_dbfs", "model_snr_db", "master_snr_db", "probe_snr_db",
                    "gain_block_frames", "gains", "packet_frames"}


@dataclass
class Manifest:
    mode: str
    sample_rate: int
    channels: int
    frames: int
    sample_format: str  # PCM of the master: "s16" or "s24" (lossless), "float" (lossy)
    stems: list[StemInfo]
    residual: dict[str, Any]
    mastering: dict[str, Any]
    loudness_lufs: dict[str, float | None] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    master_sha256_pcm: str = ""
    version: int = FORMAT_VERSION
    generator: str = "scorebridge"
    # v3: per-track CRC32 of each group of packets (see ``check_integrity``); None in v1/v2.
    integrity: dict[str, Any] | None = None
    # v4: the mix track (the master as one ordinary track, last in the container, the only
    # default track): {"codec", "bitrate_bps", "packet_frames"}; None when the file has none.
    mix: dict[str, Any] | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def track_names(self) -> list[str]:
        """The container's tracks in order: the residual, the stems, then the mix track if any."""
        return ["residual", *(s.name for s in self.stems), *(["master"] if self.mix else [])]

    @property
    def track_codecs(self) -> list[str]:
        return [self.residual.get("codec"), *(s.codec for s in self.stems), *([self.mix["codec"]] if self.mix else [])]

    def to_json(self) -> str:
        data = asdict(self)
        if self.integrity is None:
            del data["integrity"]
        if self.mix is None:
            del data["mix"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        if not isinstance(text, str):
            raise CodecError(f"{where}: manifest must be text")
        if len(text.encode("utf-8", "surrogatepass")) > LIMITS["max_manifest_bytes"]:
            raise CodecError(f"{where}: manifest larger than {LIMITS['max_manifest_bytes']} bytes")
        try:
            data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            raise CodecError(f"{where}: manifest is not JSON "
                             f"(line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except CodecError as exc:
            raise CodecError(f"{where}: {exc}") from None
        except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; nesting
            raise CodecError(f"{where}: manifest is not usable JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise CodecError(f"{where}: manifest must be a JSON object")
        version = data.get("version")
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise CodecError(f"{where}: SNC format version {version!r} is not supported (this reader: "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        allowed = {f for f in cls.__dataclass_fields__} - ({"integrity"} if version < 3 else set()) \
            - ({"mix"} if version < 4 else set())
        required = {"mode", "sample_rate", "channels", "frames", "sample_format", "stems", "residual", "mastering"}
        _known_keys(data, allowed, required | ({"integrity"} if version >= 3 else set()), where)
        stems = data.pop("stems")
        if not isinstance(stems, list) or not 1 <= len(stems) <= LIMITS["max_stems"]:
            raise CodecError(f"{where}: stems must be a list of 1..{LIMITS['max_stems']} objects")
        infos = []
        for index, stem in enumerate(stems):
            if not isinstance(stem, dict):
                raise CodecError(f"{where} stem #{index + 1}: must be an object")
            _known_keys(stem, _STEM_FIELDS, {"name"}, f"{where} stem #{index + 1}")
            infos.append(StemInfo(**stem))
        manifest = cls(stems=infos, **data)
        manifest.validate(where)
        return manifest

    def validate(self, where: str = "manifest") -> None:
        """Every field's type and range, and that the fields agree with each other."""
        _int(self.version, min(READABLE_VERSIONS), max(READABLE_VERSIONS), f"{where}: format version")
        if not isinstance(self.generator, str) or len(self.generator) > 200:
            raise CodecError(f"{where}: generator must be a string of at most 200 characters")
        _choice(self.mode, MODES, f"{where}: mode")
        if not _is_int(self.sample_rate) or self.sample_rate not in LIMITS["sample_rates"]:
            raise CodecError(f"{where}: sample rate {self.sample_rate!r} is not one of {LIMITS['sample_rates']}")
        if not _is_int(self.channels) or not 1 <= self.channels <= LIMITS["max_channels"]:
            raise CodecError(f"{where}: {self.channels!r} channels is outside 1..{LIMITS['max_channels']} "
                             "(a whole number)")
        if not _is_int(self.frames) or not 0 < self.frames <= LIMITS["max_duration_s"] * self.sample_rate:
            raise CodecError(f"{where}: length of {self.frames!r} frames is outside the limit of "
                             f"{LIMITS['max_duration_s']} s")
        _choice(self.sample_format, ("s16", "s24") if self.mode == "lossless" else ("float",),
                f"{where}: sample format (mode {self.mode})")
        if not isinstance(self.stems, list) or not 1 <= len(self.stems) <= LIMITS["max_stems"]:
            raise CodecError(f"{where}: {len(self.stems)} stems is outside 1..{LIMITS['max_stems']}")
        codec = "flac" if self.mode == "lossless" else "opus"
        for index, stem in enumerate(self.stems):
            stem.validate(f"{where} stem #{index + 1}")
            if self.version >= 2 and stem.codec != codec:
                raise CodecError(f"{where} stem #{index + 1}: codec {stem.codec} in a {self.mode} file "
                                 f"(expected {codec})")
        names = [s.name for s in self.stems]  # (strings: each stem's checks ran above)
        if len(set(names)) != len(names):
            raise CodecError(f"{where}: stem names repeat: {names}")
        self._validate_residual(where, codec)
        # The mastering model's fields and packed arrays (decoded within their claimed sizes).
        MasteringModel.from_manifest(self.mastering, self.channels, self.frames, f"{where} mastering")
        self._validate_tables(where)
        if not isinstance(self.master_sha256_pcm, str) or not _SHA256.fullmatch(self.master_sha256_pcm):
            raise CodecError(f"{where}: master_sha256_pcm must be 64 lower-case hex digits or empty")
        self._validate_mix(where, codec)
        if self.version >= 3:
            check_integrity(self.integrity, len(self.track_names), self.duration_s, f"{where} integrity")
        elif self.integrity is not None:
            raise CodecError(f"{where}: an integrity table in a version {self.version} manifest")

    def _validate_mix(self, where: str, codec: str) -> None:
        mix, at = self.mix, f"{where} mix track"
        if mix is None:
            return
        if self.version < 4:
            raise CodecError(f"{where}: a mix track in a version {self.version} manifest")
        if not isinstance(mix, dict):
            raise CodecError(f"{at}: must be an object")
        _known_keys(mix, {"codec", "bitrate_bps", "packet_frames"}, {"codec"}, at)
        if _choice(mix["codec"], CODECS, f"{at}: codec") != codec:
            raise CodecError(f"{at}: codec {mix['codec']} in a {self.mode} file (expected {codec})")
        if mix.get("bitrate_bps") is not None:
            _int(mix["bitrate_bps"], 1, LIMITS["max_bitrate_bps"], f"{at}: bitrate (b/s)")
        check_packet_frames(mix.get("packet_frames"), at)

    def _validate_residual(self, where: str, codec: str) -> None:
        residual, at = self.residual, f"{where} residual"
        if not isinstance(residual, dict):
            raise CodecError(f"{where}: residual must be an object")
        _known_keys(residual, _RESIDUAL_FIELDS, {"codec"}, at)
        _choice(residual["codec"], CODECS, f"{at}: codec")
        if self.version >= 2 and residual["codec"] != codec:
            raise CodecError(f"{at}: codec {residual['codec']} in a {self.mode} file (expected {codec})")
        if residual.get("bitrate_bps") is not None:
            _int(residual["bitrate_bps"], 1, LIMITS["max_bitrate_bps"], f"{at}: bitrate (b/s)")
        for key in ("rms_dbfs", "model_snr_db", "master_snr_db", "probe_snr_db"):
            _number(residual.get(key), -1000.0, 1000.0, f"{at}: {key}", optional=True)
        check_packet_frames(residual.get("packet_frames"), at)
        block = residual.get("gain_block_frames")
        if block is not None:
            _int(block, 1, 10 * self.sample_rate, f"{at}: gain_block_frames")
        gains = residual.get("gains")
        if gains is None:
            return
        size = block or 48000
        needed = -(-self.frames // size)
        if not isinstance(gains, list) or len(gains) != needed:
            raise CodecError(f"{at}: residual gain table has {len(gains) if isinstance(gains, list) else 0} "
                             f"blocks, {needed} expected (one per {size} frames)")
        for index, row in enumerate(gains):
            if (not isinstance(row, list) or len(row) != self.channels
                    or not all(_is_number(g) and 0.0 <= g <= 1.0 for g in row)):
                raise CodecError(f"{at}: residual gain table row {index} must hold {self.channels} numbers "
                                 "in 0..1 (one per channel)")

    def _validate_tables(self, where: str) -> None:
        if not isinstance(self.loudness_lufs, dict) or len(self.loudness_lufs) > LIMITS["max_stems"] + 1:
            raise CodecError(f"{where}: loudness_lufs must be an object of at most {LIMITS['max_stems'] + 1} entries")
        for key, value in self.loudness_lufs.items():
            _number(value, -200.0, 30.0, f"{where}: loudness of {key[:64]!r} (LUFS)", optional=True)
        if not isinstance(self.contexts, dict) or len(self.contexts) > LIMITS["max_contexts"]:
            raise CodecError(f"{where}: contexts must be an object of at most {LIMITS['max_contexts']} entries")
        for key, value in self.contexts.items():
            if len(key) > LIMITS["max_name_chars"] or not isinstance(value, dict):
                raise CodecError(f"{where}: context {key[:64]!r} must be an object named by at most "
                                 f"{LIMITS['max_name_chars']} characters")


def check_integrity(data: Any, tracks: int, duration_s: float, where: str) -> None:
    """A v3 integrity table: ``{"algorithm": "crc32", "group_ms": G, "tracks": [{"packets":
    N, "crc32": "<base64 of little-endian uint32, one per group>"}, ...]}``, one entry per
    track in container order. Group k of a track holds its packets with k * G <= pts (ms)
    < (k + 1) * G (packets before 0 in group 0)."""
    if not isinstance(data, dict):
        raise CodecError(f"{where}: must be an object")
    _known_keys(data, {"algorithm", "group_ms", "tracks"}, {"algorithm", "group_ms", "tracks"}, where)
    _choice(data["algorithm"], (INTEGRITY_ALGORITHM,), f"{where}: algorithm")
    group_ms = _int(data["group_ms"], LIMITS["min_integrity_group_ms"], LIMITS["max_duration_s"] * 1000,
                    f"{where}: group_ms")
    entries = data["tracks"]
    if not isinstance(entries, list) or len(entries) != tracks:
        raise CodecError(f"{where}: tracks must list {tracks} entries (the residual, every stem and the mix track)")
    # Every track ends within a packet of the file's length: its last group is the one holding
    # the end, or (a packet ending just after it) the next one.
    most = int(duration_s * 1000) // group_ms + 2
    total = 0
    for index, entry in enumerate(entries):
        at = f"{where} track {index}"
        if not isinstance(entry, dict):
            raise CodecError(f"{at}: must be an object")
        _known_keys(entry, {"packets", "crc32"}, {"packets", "crc32"}, at)
        _int(entry["packets"], 1, 1 << 31, f"{at}: packet count")
        table = entry["crc32"]
        if not isinstance(table, str) or len(table) > 4 * (4 * most + 2) // 3 + 4:
            raise CodecError(f"{at}: crc32 must be base64 of at most {most} checksums")
        groups = len(unpack_crcs(table, at))
        if not 1 <= groups <= most:
            raise CodecError(f"{at}: {groups} checksum groups of {group_ms} ms do not fit {duration_s:.3f} s")
        total += groups
    if total > LIMITS["max_integrity_groups"]:
        raise CodecError(f"{where}: {total} checksum groups, more than {LIMITS['max_integrity_groups']}")


def pack_crcs(crcs: list[int]) -> str:
    return base64.b64encode(b"".join(c.to_bytes(4, "little") for c in crcs)).decode("ascii")


def unpack_crcs(text: str, where: str) -> list[int]:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise CodecError(f"{where}: crc32 is not base64") from None
    if len(raw) % 4:
        raise CodecError(f"{where}: crc32 holds {len(raw)} bytes, not a whole number of checksums")
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
