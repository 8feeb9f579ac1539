"""The pyo side of playback and rendering: numpy feeds into pyo, and the output graph.

Feeds. pyo calls ``Server.setCallback`` functions once per buffer, just before it computes the
audio graph. Each feed is a ``DataTable`` one buffer long whose memory numpy writes directly
(``getBuffer``); a ``TableRead`` at the table's own rate (one table per buffer, no
interpolation) plays it sample for sample in the same buffer. So a block computed in the
callback is heard in that very buffer: the mixer adds no latency beyond pyo's own.

Graphs. stereo/mono: feed i -> output i. multichannel: feed i -> output i. binaural: each stem
feed goes through a head-related transfer function at its azimuth, the residual feeds go straight to the
two ears. The HRTF object is pyo's ``HRTF`` (one interpolated head-related impulse response pair
per source), not ``Binaural`` (VBAP over 16 virtual speakers, each through an HRTF): measured
here, ``Binaural`` costs about half a CPU core per source (8 stems cannot play in real time)
and its loudness swings by 12 dB across azimuths, leaning left at 0 degrees; ``HRTF`` costs
about a twentieth of a core and is symmetric. Each source is scaled by the measured power gain
of its azimuth (``BINAURAL_GAIN_DB``) so that placing a stem does not change its loudness.
pyo's impulse responses are short and lose the low end (-13 dB at 55 Hz against 1 kHz), so
each stem is split by a 4th-order Linkwitz-Riley crossover at ``CROSSOVER_HZ``: the highs go
through the HRTF, the lows reach both ears unchanged (below 250 Hz the head barely shadows).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engines.snc.manifest import StemInfo

__all__ = ["CROSSOVER_HZ", "import_pyo", "PyoFeed", "build_graph", "default_positions", "measure_binaural_gain",
           "BINAURAL_GAIN_DB"]

# Output power (L^2 + R^2) of pyo's ``HRTF`` relative to its input, by azimuth, measured with
# white noise by measure_binaural_gain() at 48 kHz (pyo 1.1.0); symmetric within 0.1 dB.
BINAURAL_GAIN_DB: dict[int, float] = {
    -180: -1.09, -165: -1.42, -150: -0.43, -135: 1.15, -120: 2.47, -105: 3.73, -90: 4.23,
    -75: 3.62, -60: 2.97, -45: 2.5, -30: 2.56, -15: 2.95, 0: 2.59, 15: 2.95, 30: 2.56,
    45: 2.48, 60: 2.94, 75: 3.59, 90: 4.18, 105: 3.71, 120: 2.44, 135: 1.13, 150: -0.45,
    165: -1.48, 180: -1.14,
}


CROSSOVER_HZ = 250.0


def import_pyo() -> Any:
    """pyo, imported lazily (it loads its HRTF set) and without its wxPython banner."""
    os.environ.setdefault("PYO_GUI_WX", "0")
    import pyo

    return pyo


class PyoFeed:
    """``count`` one-buffer tables that numpy writes and pyo plays in the same buffer."""

    def __init__(self, pyo: Any, count: int, buffer_frames: int) -> None:
        self.tables = [pyo.DataTable(buffer_frames) for _ in range(count)]
        self.arrays = [np.asarray(t.getBuffer()) for t in self.tables]
        self.readers = [pyo.TableRead(t, freq=t.getRate(), loop=1, interp=1).play() for t in self.tables]
        self.buffer_frames = buffer_frames

    def write(self, block: np.ndarray | None) -> None:
        """One buffer (frames, count); None or a short block is padded with silence."""
        for index, array in enumerate(self.arrays):
            if block is None:
                array[:] = 0.0
            else:
                n = block.shape[0]
                array[:n] = block[:, index]
                array[n:] = 0.0


def default_positions(stems: Sequence[StemInfo], explicit: Mapping[str, float] | None = None) -> dict[str, float]:
    """Azimuth in degrees (negative = left) per stem: explicit name or @role first, vocals and
    bass in front, the others spread alternately left and right around the listener."""
    explicit = explicit or {}
    ring = [-45.0, 45.0, -90.0, 90.0, -135.0, 135.0, -30.0, 30.0, -60.0, 60.0, -120.0, 120.0]
    positions: dict[str, float] = {}
    spread = 0
    for stem in stems:
        if stem.name in explicit:
            positions[stem.name] = float(explicit[stem.name])
        elif f"@{stem.role}" in explicit:
            positions[stem.name] = float(explicit[f"@{stem.role}"])
        elif stem.role in ("vocals", "bass"):
            positions[stem.name] = 0.0
        else:
            positions[stem.name] = ring[spread % len(ring)]
            spread += 1
    return positions


def _binaural_gain(azimuth: float) -> float:
    """Linear amplitude correction for a source at ``azimuth`` (interpolated from the table)."""
    if not BINAURAL_GAIN_DB:
        return 1.0
    keys = sorted(BINAURAL_GAIN_DB)
    db = float(np.interp(azimuth, keys, [BINAURAL_GAIN_DB[k] for k in keys]))
    return 10.0 ** (-db / 20.0)


def _place(pyo: Any, source: Any, azimuth: float) -> tuple[Any, Any, list[Any]]:
    """(stereo HRTF of the highs, mono lows, objects to keep) for one source."""
    azimuth = max(-180.0, min(180.0, azimuth))
    highs = pyo.ButHP(pyo.ButHP(source, CROSSOVER_HZ), CROSSOVER_HZ)
    lows = pyo.ButLP(pyo.ButLP(source, CROSSOVER_HZ), CROSSOVER_HZ)
    # Normalised so that L^2 + R^2 is twice the input power: each ear hears a frontal source
    # at about the level a centred stereo mix gives it.
    placed = pyo.HRTF(highs, azimuth=azimuth, mul=_binaural_gain(azimuth) * math.sqrt(2.0))
    return placed, lows, [highs, lows, placed]


def build_graph(pyo: Any, feed: PyoFeed, layout: str, stems: Sequence[StemInfo], channels: int,
                positions: Mapping[str, float] | None = None) -> list[Any]:
    """Connect the feeds to the server's outputs; returns the objects to keep alive."""
    keep: list[Any] = list(feed.readers)
    if layout != "binaural":
        for index, reader in enumerate(feed.readers):
            reader.out(chnl=index)
        return keep
    azimuths = default_positions(stems, positions)
    sources: list[Any] = []
    lows: list[Any] = []
    for stem, reader in zip(stems, feed.readers):
        placed, low, objects = _place(pyo, reader, azimuths[stem.name])
        sources.append(placed)
        lows.append(low)
        keep.extend(objects)
    ears = pyo.Mix(sources, voices=2).out(chnl=0)  # pyo sums everything sent to one output
    keep.extend(pyo.Mix(lows, voices=1).out(chnl=channel) for channel in (0, 1))
    for channel, reader in enumerate(feed.readers[len(stems):len(stems) + 2]):
        reader.out(chnl=channel)
    keep.extend([*sources, ears])
    return keep


def measure_binaural_gain(azimuths: Sequence[float], seconds: float = 2.0, sample_rate: int = 48000,
                          kind: str = "HRTF") -> dict[float, float]:
    """Output/input power of pyo's ``HRTF`` (or ``kind``) in dB at each azimuth, with white noise, rendered
    on pyo's offline server. Used to build ``BINAURAL_GAIN_DB`` and by its test."""
    import tempfile

    import soundfile as sf

    pyo = import_pyo()
    found: dict[float, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for azimuth in azimuths:
            path = os.path.join(folder, "binaural.wav")
            server = pyo.Server(sr=sample_rate, nchnls=2, buffersize=256, duplex=0, audio="offline")
            server.deactivateMidi()
            server.setVerbosity(1)
            server.boot()
            server.recordOptions(dur=seconds, filename=path, sampletype=3)
            noise = pyo.Noise(0.25)
            _ = getattr(pyo, kind)(noise, azimuth=float(azimuth)).out()
            server.start()
            server.shutdown()
            data, _ = sf.read(path, dtype="float64")
            skip = sample_rate // 10
            power_out = float(np.sum(np.mean(np.square(data[skip:]), axis=0)))
            power_in = 0.25 ** 2 / 3.0  # uniform noise in -0.25..0.25
            found[float(azimuth)] = 10.0 * math.log10(power_out / power_in)
    return found
