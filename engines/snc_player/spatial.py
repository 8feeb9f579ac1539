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
about a twentieth of a core and is symmetric. pyo's impulse responses are short and lose the
low end (-8 dB at 55 Hz against 1 kHz), so each stem is split by a 4th-order Linkwitz-Riley
crossover at ``CROSSOVER_HZ``: the highs go through the HRTF (and a bell cut of its ear-canal
resonance), the lows reach both ears unchanged (below 250 Hz the head barely shadows). The
HRTF branch is scaled by its measured pink-noise power gain at the stem's azimuth
(``BINAURAL_GAIN_DB``) so that placing a stem does not change its loudness.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engines.snc.manifest import StemInfo

__all__ = [
    "CROSSOVER_HZ",
    "RESONANCE_HZ",
    "RESONANCE_CUT_DB",
    "BINAURAL_GAIN_DB",
    "import_pyo",
    "PyoFeed",
    "build_graph",
    "default_positions",
    "measure_binaural_gain",
]

# Power gain (L^2 + R^2 over input) of the HRTF branch by azimuth, for pink noise, measured by
# measure_binaural_gain() at 48 kHz with pyo 1.1.0 (symmetric to 0.01 dB).
BINAURAL_GAIN_DB: dict[int, float] = {
    -180: -1.58,
    -165: -1.73,
    -150: -1.27,
    -135: -0.27,
    -120: 0.81,
    -105: 1.88,
    -90: 2.35,
    -75: 2.02,
    -60: 1.64,
    -45: 1.35,
    -30: 1.21,
    -15: 1.1,
    0: 0.77,
    15: 1.1,
    30: 1.21,
    45: 1.35,
    60: 1.64,
    75: 2.02,
    90: 2.35,
    105: 1.88,
    120: 0.81,
    135: -0.27,
    150: -1.27,
    165: -1.73,
    180: -1.58,
}


CROSSOVER_HZ = 250.0
# pyo's HRTF set keeps the ear-canal resonance (+7 to +9 dB at 2-3 kHz against 1 kHz, at 0
# and -90 degrees); a bell cut takes most of it out so that placed stems are not harsh.
RESONANCE_HZ = 2600.0
RESONANCE_CUT_DB = -6.0


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


def default_positions(
    stems: Sequence[StemInfo], explicit: Mapping[str, float] | None = None
) -> dict[str, float]:
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


def _hrtf_branch(pyo: Any, source: Any, azimuth: float, gain: float) -> tuple[Any, list[Any]]:
    """Highs of ``source`` through the HRTF at ``azimuth``, ear-canal resonance tamed."""
    highs = pyo.ButHP(pyo.ButHP(source, CROSSOVER_HZ), CROSSOVER_HZ)
    placed = pyo.HRTF(highs, azimuth=azimuth)
    tamed = pyo.EQ(placed, freq=RESONANCE_HZ, q=1.2, boost=RESONANCE_CUT_DB, type=0, mul=gain)
    return tamed, [highs, placed, tamed]


def _place(pyo: Any, source: Any, azimuth: float) -> tuple[Any, Any, list[Any]]:
    """(stereo HRTF of the highs, mono lows, objects to keep) for one source."""
    azimuth = max(-180.0, min(180.0, azimuth))
    # Normalised so that L^2 + R^2 is twice the input power: each ear hears a frontal source
    # at about the level a centred stereo mix gives it.
    placed, objects = _hrtf_branch(pyo, source, azimuth, _binaural_gain(azimuth) * math.sqrt(2.0))
    lows = pyo.ButLP(pyo.ButLP(source, CROSSOVER_HZ), CROSSOVER_HZ)
    return placed, lows, [*objects, lows]


def build_graph(
    pyo: Any,
    feed: PyoFeed,
    layout: str,
    stems: Sequence[StemInfo],
    channels: int,
    positions: Mapping[str, float] | None = None,
) -> list[Any]:
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
    for channel, reader in enumerate(feed.readers[len(stems) : len(stems) + 2]):
        reader.out(chnl=channel)
    keep.extend([*sources, ears])
    return keep


def measure_binaural_gain(
    azimuths: Sequence[float], seconds: float = 4.0, sample_rate: int = 48000
) -> dict[float, float]:
    """Power gain in dB of the HRTF branch (crossover highs -> ``HRTF`` -> resonance cut) at each
    azimuth, for pink noise, against the same high-passed noise: rendered on pyo's offline
    server. Builds ``BINAURAL_GAIN_DB``; its test re-measures a few azimuths."""
    import tempfile

    import soundfile as sf

    pyo = import_pyo()
    found: dict[float, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for azimuth in azimuths:
            path = os.path.join(folder, "hrtf.wav")
            server = pyo.Server(sr=sample_rate, nchnls=3, buffersize=256, duplex=0, audio="offline")
            server.deactivateMidi()
            server.setVerbosity(1)
            server.boot()
            server.setGlobalSeed(7)
            server.recordOptions(dur=seconds, filename=path, sampletype=3)
            noise = pyo.PinkNoise(0.3)
            branch, objects = _hrtf_branch(pyo, noise, float(azimuth), 1.0)
            branch.out(chnl=0)
            reference = pyo.ButHP(pyo.ButHP(noise, CROSSOVER_HZ), CROSSOVER_HZ).out(chnl=2)
            server.start()
            server.shutdown()
            del objects, reference
            data, _ = sf.read(path, dtype="float64")
            skip = sample_rate // 4
            power = np.mean(np.square(data[skip:]), axis=0)
            found[float(azimuth)] = 10.0 * math.log10((power[0] + power[1]) / power[2])
    return found
