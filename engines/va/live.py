"""Live VA playback: follow the transport along a curve and stream CC automation (an engine).

``VAAutomation`` (engine name ``va``) reads the curve at the transport's video time and sends,
on its slot's output channel, CC lanes (arousal -> CC11, valence -> CC1 by default, the same
mapping as ``va apply``) a beat ahead on the scheduler, each value only when it changes.

Video time = song time + ``offset_s``. Song time is measured, not assumed: while the transport
plays, each beat adds the wall time since the previous beat, so tempo changes from the DAW's
clock are followed; after a start, locate or a jump in beat numbers it restarts from
``beats * 60 / tempo`` (the bridge only sees MIDI clock, not the DAW's tempo map). Setting
``manual`` on holds the ``valence``/``arousal`` parameters instead (OSC
``/scorebridge/<slot>/manual 1``, ``.../arousal 0.8``; the change is sent at the next lane
step); ``current()`` tells other engines the VA being played. Every lane is sent again on start,
continue and locate (controller chase), and after a reset.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import mido

from core.engine import Engine, Param
from core.errors import ParameterError
from core.events import Beat, EngineInput, EngineOutput, Send, TransportChange
from core.files import regular_file

from .curve import MAX_CURVE_BYTES, VACurve, read_curve
from .errors import CurveError

__all__ = ["MAX_CURVE_BYTES", "Playhead", "VAAutomation"]

log = logging.getLogger(__name__)

# Where a curve error says where it is, without quoting the file.
_POSITION = re.compile(r"\b(line \d+|sample \d+)")


class Playhead:
    """Song time in seconds from transport events (pure logic)."""

    def __init__(self) -> None:
        self.song_s = 0.0
        self.tempo_bpm = 120.0
        self._last_beat: tuple[int, float] | None = None

    def locate(self, beats: float, tempo_bpm: float) -> None:
        """Jump to a song position (start, locate): song time estimated under the current tempo."""
        self.tempo_bpm = tempo_bpm
        self.song_s = beats * 60.0 / tempo_bpm
        self._last_beat = None

    def beat(self, index: int, time_s: float, tempo_bpm: float) -> float:
        """Advance to beat ``index`` seen at wall time ``time_s``; returns the song time."""
        self.tempo_bpm = tempo_bpm
        if self._last_beat is not None and index == self._last_beat[0] + 1 and time_s >= self._last_beat[1]:
            self.song_s += time_s - self._last_beat[1]
        else:
            self.song_s = index * 60.0 / tempo_bpm
        self._last_beat = (index, time_s)
        return self.song_s


class VAAutomation(Engine):
    """Streams a VA curve (or hand-set values) as CC lanes in sync with the transport."""

    name = "va"
    description = "Plays a valence-arousal curve in sync with the transport as CC automation."
    provides = frozenset({"affect"})
    params = (
        Param("curve", "text", "none", unit="file", max_bytes=MAX_CURVE_BYTES,
              doc="VA curve file (CSV/JSON, as va analyze writes it); none = neutral"),
        Param("offset_s", "float", 0.0, -36000.0, 36000.0, unit="s", doc="video time at song start"),
        Param("manual", "bool", False, doc="hold the valence/arousal parameters instead of the curve"),
        Param("valence", "float", 0.0, -1.0, 1.0, doc="manual valence"),
        Param("arousal", "float", 0.0, -1.0, 1.0, doc="manual arousal"),
        Param("cc_arousal", "int", 11, 0, 119, doc="controller for arousal"),
        Param("cc_valence", "int", 1, 0, 119, doc="controller for valence"),
        Param("cc_floor", "int", 32, 0, 126, doc="CC value at -1 (+1 is 127)"),
        Param("steps_per_beat", "int", 4, 1, 24, doc="lane resolution"),
    )

    def __init__(self, curve: VACurve | None = None) -> None:
        super().__init__()
        self.curve = curve
        self.playhead = Playhead()
        self._sent: dict[int, int] = {}
        self._current = (0.0, 0.0)
        self.curve_error: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VAAutomation:
        """An engine playing the curve in ``path`` (validated; CurveError names the line)."""
        return cls(read_curve(path))

    def current(self) -> tuple[float, float]:
        """(valence, arousal) at the last beat (safe to read from another thread)."""
        return self._current

    def value_at(self, song_s: float) -> tuple[float, float]:
        """What is played at a song time: the manual values, the curve, or neutral without one."""
        if self.param("manual"):
            return float(self.param("valence")), float(self.param("arousal"))
        if self.curve is None:
            return 0.0, 0.0
        valence, arousal = self.curve.at(song_s + self.param("offset_s"))
        return float(valence), float(arousal)

    def _level(self, value: float) -> int:
        floor = self.param("cc_floor")
        return round(floor + (127 - floor) * (value + 1.0) / 2.0)

    def _lanes(self, at_beats: float, valence: float, arousal: float) -> list[EngineOutput]:
        outputs: list[EngineOutput] = []
        for control, value in ((self.param("cc_arousal"), arousal), (self.param("cc_valence"), valence)):
            level = self._level(value)
            if self._sent.get(control) != level:
                self._sent[control] = level
                outputs.append(Send(mido.Message("control_change", control=control, value=level), at_beats))
        return outputs

    def process(self, event: EngineInput) -> Sequence[EngineOutput]:
        if isinstance(event, TransportChange):
            self.playhead.locate(event.beats, self.playhead.tempo_bpm)
            if event.playing:  # chase: every lane is sent again on start, continue and locate
                self._sent.clear()
                valence, arousal = self.value_at(self.playhead.song_s)
                self._current = (valence, arousal)
                return self._lanes(event.beats, valence, arousal)
            return ()
        if not isinstance(event, Beat):
            return ()
        song_s = self.playhead.beat(event.index, event.time_s, event.tempo_bpm)
        seconds_per_beat = 60.0 / event.tempo_bpm
        steps = self.param("steps_per_beat")
        outputs: list[EngineOutput] = []
        for step in range(steps):
            valence, arousal = self.value_at(song_s + step / steps * seconds_per_beat)
            if step == 0:
                self._current = (valence, arousal)
            outputs += self._lanes(event.index + step / steps, valence, arousal)
        return outputs

    def on_param_change(self, name: str, value: object) -> None:
        if name == "curve":
            self._load(str(value))
        if name.startswith("cc_"):
            self._sent.clear()  # resend every lane on its (possibly new) controller

    def _load(self, path: str) -> None:
        """Read the curve named by the ``curve`` parameter; a bad file is reported in
        ``status()`` and leaves the engine neutral rather than failing the slot. The report
        names the file, the reason and the line, never the file's content (status travels to
        every surface)."""
        self.curve_error = None
        if path == "none":
            self.curve = None
            return
        try:
            self.curve = read_curve(regular_file(path, MAX_CURVE_BYTES, "curve"))
        except ParameterError as exc:
            self.curve, self.curve_error = None, str(exc)
            log.error("va: %s", exc)
        except CurveError as exc:
            position = _POSITION.search(str(exc))
            self.curve = None
            self.curve_error = (f"curve: {path} is not a valid VA curve"
                                f"{' (' + position.group(1) + ')' if position else ''}; `scorebridge va "
                                "import FILE -o checked.csv` tells why")
            log.error("va: %s", self.curve_error)

    def status(self) -> dict[str, object]:
        return {"curve": self.param("curve"), "samples": 0 if self.curve is None else len(self.curve),
                "error": self.curve_error, "valence": self._current[0], "arousal": self._current[1]}

    def reset(self) -> None:
        """Transport stop or locate: every lane is sent again (the playhead keeps its tempo)."""
        self._sent.clear()
