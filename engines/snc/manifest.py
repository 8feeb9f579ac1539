"""The SNC manifest: what a file holds, validated strictly on read (docs/snc.md).

The manifest is JSON stored as the Matroska tag ``SNC_MANIFEST``. Readers check the format
version and every limit before allocating anything, so a hostile file cannot make them
allocate without bound.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.errors import CodecError

__all__ = ["FORMAT_VERSION", "LIMITS", "MODES", "Manifest", "StemInfo"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v1: gain-only mastering model, no FIR/envelope
MODES = ("lossless", "transparent", "compact")
LIMITS = {
    "max_stems": 32,
    "max_channels": 8,
    "max_duration_s": 4 * 3600,
    "max_manifest_bytes": 1 << 20,
    "sample_rates": (44100, 48000, 88200, 96000),
    "max_name_chars": 64,
    "max_packet_frames": 65536,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def check_packet_frames(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, int) or not 1 <= value <= LIMITS["max_packet_frames"]):
        raise CodecError(f"{where}: packet size {value!r} is outside 1..{LIMITS['max_packet_frames']} frames")


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
        if not isinstance(self.name, str) or not _NAME.match(self.name) or len(self.name) > LIMITS["max_name_chars"]:
            raise CodecError(f"{where}: stem name {self.name!r} must be 1-64 letters, digits, space, _ . -")
        if self.name in ("master", "residual"):
            raise CodecError(f"{where}: 'master' and 'residual' are reserved names")
        if not _COLOUR.match(str(self.colour)):
            raise CodecError(f"{where}: colour {self.colour!r} must look like #RRGGBB")
        if not -1.0 <= float(self.pan) <= 1.0:
            raise CodecError(f"{where}: pan {self.pan} must lie in -1..1")
        if not -96.0 <= float(self.gain_db) <= 24.0:
            raise CodecError(f"{where}: gain {self.gain_db} dB must lie in -96..24")
        check_packet_frames(self.packet_frames, where)


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

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        if len(text.encode("utf-8")) > LIMITS["max_manifest_bytes"]:
            raise CodecError(f"{where}: manifest larger than {LIMITS['max_manifest_bytes']} bytes")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodecError(f"{where}: manifest is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise CodecError(f"{where}: manifest must be a JSON object")
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise CodecError(f"{where}: SNC format version {version!r} is not supported (this reader: "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        try:
            stems = [StemInfo(**s) for s in data.pop("stems")]
            manifest = cls(stems=stems, **data)
        except (KeyError, TypeError) as exc:
            raise CodecError(f"{where}: manifest fields are wrong: {exc}") from None
        manifest.validate(where)
        return manifest

    def validate(self, where: str = "manifest") -> None:
        if self.mode not in MODES:
            raise CodecError(f"{where}: mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.sample_rate not in LIMITS["sample_rates"]:
            raise CodecError(f"{where}: sample rate {self.sample_rate} is not one of {LIMITS['sample_rates']}")
        if not isinstance(self.channels, int) or not 1 <= self.channels <= LIMITS["max_channels"]:
            raise CodecError(f"{where}: {self.channels} channels is outside 1..{LIMITS['max_channels']}")
        if not isinstance(self.frames, int) or not 0 < self.frames <= LIMITS["max_duration_s"] * self.sample_rate:
            raise CodecError(f"{where}: length of {self.frames} frames is outside the limit of "
                             f"{LIMITS['max_duration_s']} s")
        if not 1 <= len(self.stems) <= LIMITS["max_stems"]:
            raise CodecError(f"{where}: {len(self.stems)} stems is outside 1..{LIMITS['max_stems']}")
        names = [s.name for s in self.stems]
        if len(set(names)) != len(names):
            raise CodecError(f"{where}: stem names repeat: {names}")
        for index, stem in enumerate(self.stems):
            stem.validate(f"{where} stem #{index + 1}")
        if not isinstance(self.residual, dict):
            raise CodecError(f"{where}: residual must be an object")
        check_packet_frames(self.residual.get("packet_frames"), f"{where} residual")
