"""The video's side of a score: checking the input, the SNC file's contexts, and the final mux
(the video stream copied untouched, the master as the one audio stream; ffmpeg)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from core.errors import BackendError, ConfigError, ScoreBridgeError
from engines.snc.manifest import StemInfo
from engines.snc_player.adaptive import DEFAULT_MAPPING
from engines.va import VideoError
from engines.va.decode import VideoInfo, probe

from .form import Plan
from .presets import PARTS

__all__ = ["AUDIO_BITRATE", "check_container", "check_video", "mux", "section_contexts"]

AUDIO_BITRATE = "256k"
MUX_TIMEOUT_S = 600


def check_video(path: Path) -> tuple[VideoInfo, int]:
    """Probe the video and decode its first frame; returns what the probe says and the container
    index of the video stream (not a cover picture). VideoError for an unreadable file, one with
    no video stream, no frames, or no known duration."""
    import av

    if not path.is_file():
        raise VideoError(f"{path}: {'no such file' if not path.exists() else 'not a regular file'}")
    info = probe(path)
    try:
        with av.open(str(path), "r") as container:
            stream = next(s for s in container.streams.video
                          if not s.disposition & av.stream.Disposition.attached_pic)
            index = stream.index
            frame = next(iter(container.decode(stream)), None)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot decode its video ({exc})") from None
    if frame is None:
        raise VideoError(f"{path}: the video stream holds no frames")
    if not info.duration_s or info.duration_s <= 0:
        raise VideoError(f"{path}: the container does not say how long the video lasts")
    return info, index


def check_container(video: Path, stream_index: int, container: str, output: Path) -> None:
    """Refuse, before any work, a container that cannot hold the video's codec (an MP4 takes
    fewer than Matroska): ffmpeg copies one frame into it, written to a pipe."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-map", f"0:{stream_index}", "-c", "copy",
               "-frames:v", "1", "-f", container, "-movflags", "frag_keyframe+empty_moov", "pipe:"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"ffmpeg did not copy a frame of {video.name} in 60 s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines() if "codec" in line.lower()]
        reason = lines[0].split("] ", 1)[-1].strip() if lines else "ffmpeg cannot copy the video stream into it"
        hint = "; name a .mkv output: Matroska takes any video codec" if container == "mp4" else ""
        raise ConfigError(f"-o {output}: {reason}{hint}")


def section_contexts(plan: Plan) -> dict[str, dict]:
    """One SNC listening context per section: the player's VA re-orchestration
    (``snc_player.adaptive.DEFAULT_MAPPING``) at the section's mean valence and arousal."""
    stems = [StemInfo(name=part.name, role=part.role) for part in PARTS]
    contexts = {}
    for section in plan.sections[:60]:
        gains = DEFAULT_MAPPING.gains_db(section.valence, section.arousal, stems)
        contexts[f"section-{section.index + 1}"] = {
            "description": f"{section.start_s:.2f}-{section.end_s:.2f} s: valence {section.valence:+.2f}, "
                           f"arousal {section.arousal:+.2f}",
            "gains_db": {name: round(value, 2) for name, value in gains.items()}}
    return contexts


def mux(video: Path, stream_index: int, master: Path, output: Path, container: str) -> None:
    """Write ``output``: the video stream copied, ``master`` encoded to AAC as the only audio."""
    if shutil.which("ffmpeg") is None:
        raise BackendError("ffmpeg is not installed (Debian: apt install ffmpeg)")
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(video), "-i", str(master),
               "-map", f"0:{stream_index}", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", AUDIO_BITRATE,
               "-map_metadata", "0", "-f", container, str(output)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=MUX_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"ffmpeg did not finish writing {output.name} in {MUX_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        hint = " (try a .mkv output: Matroska takes any video codec)" if container == "mp4" else ""
        raise ScoreBridgeError(f"ffmpeg could not write {output.name}: {lines[-1] if lines else done.returncode}{hint}")
