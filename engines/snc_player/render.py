"""Offline rendering with the player's own DSP, buffer by buffer as the player runs it.

Stereo and multichannel renders write the ``Pipeline``'s output directly (numpy), so a
default render of a lossless file is the master to float32 rounding. Binaural renders (and
any render with ``via="pyo"``) run the same pyo graph as live playback on pyo's offline
server, one buffer per pyo callback. Two pyo facts shape that path: pyo fades in the first
buffer after a start, so the render primes one buffer of silence and trims it; and pyo's
output stage scales by 0.99999923 (-7e-6 dB, measured), which the numpy path avoids.
Every render goes to a temporary name beside the output and is renamed into place.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core.atomic import atomic_output, signals_deferred
from core.errors import CodecError, ConfigError, ParameterError, ScoreBridgeError
from engines.snc.reader import SncReader
from engines.snc_player.adaptive import DEFAULT_MAPPING, load_mapping
from engines.snc_player.contexts import load_contexts
from engines.snc_player.pipeline import Pipeline
from engines.snc_player.spatial import PyoFeed, build_graph, import_pyo
from engines.snc_player.stream import Slicer
from engines.va import read_curve

__all__ = ["MixRequest", "make_pipeline", "render"]

BUFFER_FRAMES = 256


@dataclass
class MixRequest:
    """What a user asks for on the command line or from the engine's parameters."""

    context: str = "default"
    contexts_file: Path | None = None
    gains_db: Mapping[str, float] = field(default_factory=dict)
    pans: Mapping[str, float] = field(default_factory=dict)
    mutes: Sequence[str] = ()
    solos: Sequence[str] = ()
    va_file: Path | None = None
    mapping_file: Path | None = None
    valence: float = 0.0
    arousal: float = 0.0
    source: str = "master"


def make_pipeline(reader: SncReader, request: MixRequest) -> Pipeline:
    """A pipeline for ``reader``'s file set up as ``request`` says; names are checked."""
    contexts = load_contexts(reader.manifest.contexts, request.contexts_file)
    mapping = load_mapping(request.mapping_file) if request.mapping_file else DEFAULT_MAPPING
    trajectory = read_curve(request.va_file) if request.va_file else None
    pipeline = Pipeline(reader.manifest, contexts, request.context, mapping, trajectory)
    names = set(pipeline.names)
    for label, keys in (
        ("--gain", request.gains_db),
        ("--pan", request.pans),
        ("--mute", request.mutes),
        ("--solo", request.solos),
    ):
        unknown = [k for k in keys if k not in names]
        if unknown:
            raise ParameterError(
                f"{label}: no stem {unknown[0]!r} in {reader.path.name}; stems: {', '.join(pipeline.names)}"
            )
    for name in pipeline.names:
        fields: dict[str, Any] = {}
        if name in request.gains_db:
            fields["gain_db"] = float(request.gains_db[name])
        if name in request.pans:
            fields["pan"] = float(request.pans[name])
        if name in request.mutes:
            fields["mute"] = True
        if name in request.solos:
            fields["solo"] = True
        if fields:
            pipeline.set_user(name, **fields)
    pipeline.set_source(request.source)
    if trajectory is not None:
        pipeline.set_va(*trajectory.at(0.0))
    elif request.valence or request.arousal:
        pipeline.set_va(request.valence, request.arousal)
    return pipeline


def render(
    path: Path,
    output: Path,
    request: MixRequest | None = None,
    buffer_frames: int = BUFFER_FRAMES,
    via: str = "auto",
) -> dict[str, Any]:
    """Render ``path`` to the WAV file ``output`` (32-bit float); returns what was done.
    ``via``: auto (pyo for binaural, numpy otherwise), numpy or pyo."""
    if via not in ("auto", "numpy", "pyo"):
        raise ParameterError(f"render via {via!r}: use auto, numpy or pyo")
    request = request or MixRequest()
    output = Path(output)
    if output.suffix.lower() != ".wav":
        raise ConfigError(f"{output}: the renderer writes WAV files; name the output *.wav")
    if output.is_dir():
        raise ConfigError(f"{output}: is a folder; name the output *.wav")
    if not output.parent.is_dir():
        raise ConfigError(f"{output.parent}: no such folder")
    inputs = [Path(path), request.contexts_file, request.va_file, request.mapping_file]
    for source in (Path(p) for p in inputs if p is not None):
        if source.resolve() == output.resolve() or (
            output.exists() and source.exists() and os.path.samefile(source, output)
        ):
            raise ConfigError(f"{output}: is also an input ({source}); write to another file")
    reader = SncReader(path)
    # Check the whole file before writing: a damaged or cut file (or one claiming more than it
    # holds) is refused with its track and span, and nothing is written.
    reader.check_intact()
    pipeline = make_pipeline(reader, request)
    # The first buffers of a render hold the ramps from the default mix; start settled instead.
    pipeline.mixer.settle()
    manifest = reader.manifest
    channels = 2 if pipeline.layout == "binaural" else pipeline.feeds
    if via == "numpy" and pipeline.layout == "binaural":
        raise ParameterError("the binaural layout needs pyo's HRTF: render it via pyo")
    use_pyo = via == "pyo" or pipeline.layout == "binaural"
    started = time.perf_counter()
    if not use_pyo:
        _render_numpy(reader, pipeline, output, buffer_frames, channels)
    else:
        _render_pyo(reader, pipeline, output, buffer_frames, channels)
    elapsed = time.perf_counter() - started
    return {
        "output": str(output),
        "frames": manifest.frames,
        "channels": channels,
        "context": pipeline.context.name,
        "layout": pipeline.layout,
        "via": "pyo" if use_pyo else "numpy",
        "seconds": round(elapsed, 3),
        "speed_x_real_time": round(manifest.duration_s / max(elapsed, 1e-9), 1),
    }


def _output_blocks(reader: SncReader, pipeline: Pipeline, buffer_frames: int) -> Iterator[np.ndarray]:
    """The pipeline's output for the whole song, buffer by buffer, realigned: the mastering
    filter's look-ahead delay is dropped at the start and flushed (with silence) at the end."""
    slicer = Slicer(reader.blocks(block_frames=16 * buffer_frames))
    skip = pipeline.delay_frames
    position = 0
    names = ["master", *pipeline.names]
    channels = reader.manifest.channels
    while True:
        block = slicer.take(buffer_frames)
        if block is None:
            if position >= reader.manifest.frames + pipeline.delay_frames:
                return
            n = min(buffer_frames, reader.manifest.frames + pipeline.delay_frames - position)
            block = {name: np.zeros((n, channels), np.float32) for name in names}
        out = pipeline.process(block, position)
        position += block["master"].shape[0]
        if skip:
            cut = min(skip, out.shape[0])
            out, skip = out[cut:], skip - cut
        if out.shape[0]:
            yield out


def _render_numpy(
    reader: SncReader, pipeline: Pipeline, output: Path, buffer_frames: int, channels: int
) -> None:
    with atomic_output(output) as temporary, sf.SoundFile(
        str(temporary), "w", reader.manifest.sample_rate, channels, "FLOAT", format="WAV"
    ) as sink:
        for out in _output_blocks(reader, pipeline, buffer_frames):
            sink.write(out)


def _render_pyo(
    reader: SncReader, pipeline: Pipeline, output: Path, buffer_frames: int, channels: int
) -> None:
    manifest = reader.manifest
    pyo = import_pyo()
    failure: list[BaseException] = []
    raw = None
    try:
        with signals_deferred():
            fd, raw = tempfile.mkstemp(suffix=".wav", prefix=".render-", dir=output.parent)
        os.close(fd)
        server = pyo.Server(
            sr=manifest.sample_rate, nchnls=channels, buffersize=buffer_frames, duplex=0, audio="offline"
        )
        server.deactivateMidi()
        server.setVerbosity(1)
        server.boot()
        try:
            server.recordOptions(
                dur=(manifest.frames + buffer_frames) / manifest.sample_rate, filename=raw, sampletype=3
            )
            feed = PyoFeed(pyo, pipeline.feeds, buffer_frames)
            graph = build_graph(
                pyo, feed, pipeline.layout, pipeline.stems, channels, pipeline.context.positions
            )
            blocks = _Rebuffer(_output_blocks(reader, pipeline, buffer_frames), buffer_frames)
            primed = [False]

            def callback() -> None:
                if failure or not primed[0]:  # the primed (faded-in) buffer stays silent
                    primed[0] = True
                    feed.write(None)
                    return
                try:
                    feed.write(blocks.take())
                except BaseException as exc:  # noqa: BLE001 - re-raised after pyo returns
                    failure.append(exc)
                    feed.write(None)

            server.setCallback(callback)
            server.start()
            del graph
        finally:
            server.shutdown()
        if failure:
            raise failure[0]
        with atomic_output(output) as temporary:
            _trim(Path(raw), temporary, buffer_frames, manifest.frames)
    except (ScoreBridgeError, OSError, RuntimeError) as exc:
        if isinstance(exc, ScoreBridgeError):
            raise
        raise CodecError(f"{output}: rendering failed: {exc}") from None
    finally:
        if raw is not None:
            Path(raw).unlink(missing_ok=True)


class _Rebuffer:
    """Output blocks of varying length re-cut into pyo buffers (None when done)."""

    def __init__(self, blocks: Iterator[np.ndarray], frames: int) -> None:
        self.blocks = blocks
        self.frames = frames
        self.pending: np.ndarray | None = None

    def take(self) -> np.ndarray | None:
        while self.pending is None or self.pending.shape[0] < self.frames:
            block = next(self.blocks, None)
            if block is None:
                break
            self.pending = block if self.pending is None else np.concatenate([self.pending, block])
        if self.pending is None or not self.pending.shape[0]:
            return None
        out, self.pending = self.pending[: self.frames], self.pending[self.frames :]
        return out


def _trim(raw: Path, target: Path, skip: int, frames: int) -> None:
    """Copy ``frames`` frames after the first ``skip`` into ``target`` (float WAV), in blocks."""
    with sf.SoundFile(str(raw)) as source:
        if source.frames < skip + frames:
            raise CodecError(f"pyo's offline server wrote {source.frames} frames, {skip + frames} expected")
        source.seek(skip)
        with sf.SoundFile(
            str(target), "w", source.samplerate, source.channels, "FLOAT", format="WAV"
        ) as sink:
            left = frames
            while left > 0:
                data = source.read(min(65536, left), dtype="float32", always_2d=True)
                sink.write(data)
                left -= data.shape[0]
