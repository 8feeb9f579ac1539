"""What ``scorebridge score`` can be asked for: styles (which models and motif), instrument presets
(General MIDI programs per part) and the parts themselves (docs/score.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INSTRUMENTS", "PARTS", "STYLES", "Instrument", "Part", "Style", "motif"]


@dataclass(frozen=True)
class Part:
    """One stem of the score: its MIDI channel (0-15), its SNC role and its place in the mix."""

    name: str
    channel: int
    role: str
    volume: int  # CC7: the mix balance, baked into the stem
    pan: int  # CC10, 64 = centre


PARTS = (
    Part("piano-right", 0, "keys", 110, 56),
    Part("piano-left", 1, "keys", 110, 56),
    Part("melody", 2, "lead", 80, 72),
    Part("harmony", 3, "strings", 100, 64),
    Part("bass", 4, "bass", 115, 64),
    Part("percussion", 9, "drums", 96, 64),
)


@dataclass(frozen=True)
class Instrument:
    """General MIDI programs (0-127) per part; ``kit`` is the drum kit (bank 128)."""

    description: str
    programs: dict[str, int]
    kit: int


INSTRUMENTS = {
    "orchestral": Instrument("grand piano, flute lead, string ensemble, contrabass, orchestral kit",
                             {"piano-right": 0, "piano-left": 0, "melody": 73, "harmony": 48, "bass": 43}, 48),
    "chamber": Instrument("grand piano, violin lead, slow strings, cello, standard kit",
                          {"piano-right": 0, "piano-left": 0, "melody": 40, "harmony": 49, "bass": 42}, 0),
    "pop": Instrument("electric piano, synth lead, warm pad, finger bass, standard kit",
                      {"piano-right": 4, "piano-left": 4, "melody": 81, "harmony": 89, "bass": 33}, 0),
}


@dataclass(frozen=True)
class Style:
    """The continuation model's style anchor, the harmonizer's, and the built-in motif."""

    continuation: str
    harmonizer: str
    # (hand 0 right / 1 left, start beats, duration beats, scale degree 0 = tonic, octave)
    motif: tuple[tuple[int, float, float, int, int], ...]


_ARCH = ((0, 0, 1, 4, 1), (0, 1, 1, 7, 1), (0, 2, 2, 9, 1), (0, 4, 3, 8, 1), (0, 7, 1, 7, 1),
         (1, 0, 4, 0, -1), (1, 0, 4, 4, -1), (1, 4, 4, 3, -1), (1, 4, 4, 5, -1))
_HYMN = ((0, 0, 2, 2, 1), (0, 2, 2, 1, 1), (0, 4, 2, 0, 1), (0, 6, 2, 1, 1),
         (1, 0, 2, 0, 0), (1, 0, 2, 4, -1), (1, 2, 2, 4, 0), (1, 4, 2, 5, 0), (1, 6, 2, 4, 0))
_HOOK = ((0, 0, 0.5, 4, 1), (0, 0.5, 0.5, 4, 1), (0, 1.5, 1, 5, 1), (0, 2.5, 1.5, 4, 1), (0, 4, 0.5, 2, 1),
         (0, 4.5, 1, 1, 1), (0, 5.5, 2.5, 0, 1), (1, 0, 1.5, 0, -1), (1, 2, 1.5, 4, -1), (1, 4, 1.5, 3, -1),
         (1, 6, 1.5, 4, -1))
_SWING = ((0, 0, 0.67, 2, 1), (0, 0.67, 0.33, 3, 1), (0, 1, 1, 4, 1), (0, 2.67, 1.33, 6, 1), (0, 4, 2, 5, 1),
          (0, 6, 2, 4, 1), (1, 0, 2, 0, -1), (1, 2, 2, 4, -1), (1, 4, 2, 1, -1), (1, 6, 2, 4, -1))
_TUNE = ((0, 0, 1, 0, 1), (0, 1, 1, 2, 1), (0, 2, 1, 4, 1), (0, 3, 1, 4, 1), (0, 4, 1.5, 5, 1), (0, 5.5, 0.5, 4, 1),
         (0, 6, 2, 2, 1), (1, 0, 2, 0, -1), (1, 2, 2, 4, -1), (1, 4, 2, 3, -1), (1, 6, 2, 4, -1))

STYLES = {
    "cinematic": Style("piano", "stage", _ARCH),
    "chorale": Style("chorale", "chorale", _HYMN),
    "pop": Style("piano", "pop", _HOOK),
    "jazz": Style("piano", "jazz", _SWING),
    "folk": Style("piano", "folk", _TUNE),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)


def motif(style: str, minor: bool) -> list[tuple[int, float, float, int]]:
    """The style's two-bar motif in C major (A minor when ``minor``): (hand, start beats,
    duration beats, MIDI pitch), right hand around C5/A4, left hand an octave or two below."""
    scale, tonic = (_MINOR, 57) if minor else (_MAJOR, 60)
    notes = []
    for hand, start, duration, degree, octave in STYLES[style].motif:
        pitch = tonic + 12 * (octave + degree // 7) + scale[degree % 7] - (12 if hand else 0)
        notes.append((hand, float(start), float(duration), pitch))
    return notes
