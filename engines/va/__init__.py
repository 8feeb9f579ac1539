"""Video-driven valence-arousal: analyse a video into a VA curve, read curves made elsewhere,
and sample them for scores, models and live playback (docs/va.md).

Only the curve helper is imported here (numpy); decoding (PyAV), sensors (ONNX Runtime),
plotting (matplotlib) and score automation (mido) load when their modules are imported.
"""

from .curve import (
    COLUMNS,
    VACurve,
    beats_to_seconds,
    midi_tempo_map,
    read_curve,
    read_song_curve,
    song_curve_at,
    song_curve_per_step,
    write_curve,
)
from .errors import CurveError, VideoError

__all__ = ["COLUMNS", "CurveError", "VACurve", "VideoError", "beats_to_seconds", "midi_tempo_map",
           "read_curve", "read_song_curve", "song_curve_at", "song_curve_per_step", "write_curve"]
