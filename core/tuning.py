"""Scales and tunings: Scala ``.scl`` scales, ``.kbm`` keyboard mappings and the shipped presets.

A ``Tuning`` is a scale (its degrees in cents above the 1/1, the last one the period) and a
keyboard mapping (which MIDI key plays which degree, and the frequency of one reference key).
It answers the frequency of every MIDI key (None for a key the mapping leaves out) and which
keys, as pitch classes, belong to the scale, which is what the engines restrict themselves to.

The parser follows the Scala file format pages (huygens-fokker.org/scala/scl_format.html and
help.htm#mappings) strictly: every error names the file and the line. docs/tuning.md says why
this is a small parser of our own and not a library.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from core.errors import ConfigError

__all__ = [
    "KeyboardMapping",
    "Scale",
    "Tuning",
    "TuningError",
    "PRESETS",
    "PRESET_DIR",
    "load_tuning",
    "parse_kbm",
    "parse_scl",
    "preset_names",
    "preset_pitch_classes",
]

PRESET_DIR = Path(__file__).with_name("tunings")
MAX_NOTES = 1024  # the format allows rejecting very large files; no scale we know comes close
_MAX_TERM = 2**31 - 1  # the largest numerator or denominator the format asks readers to support
C4_HZ = 440.0 * 2 ** (-9 / 12)


class TuningError(ConfigError):
    """A scale, mapping or tuning name that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Scale:
    """A Scala scale: ``cents`` of degrees 1..n above the implicit 1/1 (the last is the period)."""

    description: str
    cents: tuple[float, ...]
    source: str = ""

    @property
    def size(self) -> int:
        return len(self.cents)

    @property
    def period_cents(self) -> float:
        return self.cents[-1] if self.cents else 1200.0

    def degree_cents(self, degree: int) -> float:
        """Cents of any degree (negative or beyond the period) above the 1/1."""
        if not self.cents:
            return 0.0
        periods, index = divmod(degree, self.size)
        return periods * self.period_cents + (0.0 if index == 0 else self.cents[index - 1])


@dataclass(frozen=True)
class KeyboardMapping:
    """A Scala keyboard mapping. ``mapping`` holds a degree (or None, an unmapped key) for each
    key of the repeating pattern; an empty pattern is the linear mapping (key n+1 is degree n+1)."""

    mapping: tuple[int | None, ...] = ()
    first_key: int = 0
    last_key: int = 127
    middle_key: int = 60
    reference_key: int = 60
    reference_hz: float = C4_HZ
    octave_degree: int = 0  # 0: the scale's last degree
    source: str = ""

    def degree(self, key: int, scale: Scale) -> int | None:
        """The scale degree ``key`` plays, counted from the middle key; None if unmapped."""
        if not self.first_key <= key <= self.last_key:
            return None
        offset = key - self.middle_key
        if not self.mapping:
            return offset
        repeats, index = divmod(offset, len(self.mapping))
        entry = self.mapping[index]
        if entry is None:
            return None
        return entry + repeats * (self.octave_degree or scale.size)


def nearest_mapping(scale: Scale, middle_key: int = 60) -> KeyboardMapping:
    """The default mapping for a scale whose period is about an octave and that has at most 12
    degrees: each degree on the 12-TET key nearest its pitch (a taken key passes it to the next
    free one), so a melody played on a 12-key keyboard lands on the scale's own degrees."""
    pattern: list[int | None] = [None] * 12
    for degree in range(scale.size):
        target = round(scale.degree_cents(degree) / 100.0) % 12
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6):
            slot = (target + step) % 12
            if pattern[slot] is None:
                pattern[slot] = degree
                break
    return KeyboardMapping(tuple(pattern), middle_key=middle_key, reference_key=middle_key,
                           reference_hz=C4_HZ * 2 ** ((middle_key - 60) / 12), octave_degree=scale.size,
                           source="nearest 12-TET keys")


@dataclass(frozen=True)
class Tuning:
    """A scale and its keyboard mapping: the frequency of every MIDI key."""

    scale: Scale
    mapping: KeyboardMapping
    name: str = ""
    _cents: tuple[float | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reference = self.mapping.degree(self.mapping.reference_key, self.scale)
        if reference is None:
            raise TuningError(f"{self.mapping.source or 'keyboard mapping'}: the reference key "
                              f"{self.mapping.reference_key} is not mapped to a scale degree")
        base = self.scale.degree_cents(reference)
        reference_cents = 1200 * math.log2(self.mapping.reference_hz / 440.0) + 6900
        cents: list[float | None] = []
        for key in range(128):
            degree = self.mapping.degree(key, self.scale)
            cents.append(None if degree is None else reference_cents + self.scale.degree_cents(degree) - base)
        object.__setattr__(self, "_cents", tuple(cents))

    @classmethod
    def equal(cls) -> Tuning:
        """Twelve-tone equal temperament, A4 = 440 Hz on key 69."""
        return cls(Scale("12-TET", tuple(100.0 * i for i in range(1, 13))), KeyboardMapping(), "12tet")

    def cents(self, key: int) -> float | None:
        """Pitch of ``key`` in MIDI cents (key 69 at 440 Hz is 6900); None if unmapped."""
        return self._cents[key]

    def frequency(self, key: int) -> float | None:
        cents = self._cents[key]
        return None if cents is None else 440.0 * 2 ** ((cents - 6900) / 1200)

    def mapped_keys(self) -> tuple[int, ...]:
        return tuple(k for k in range(128) if self._cents[k] is not None)

    def nearest_mapped(self, key: int) -> int | None:
        """``key`` if it is mapped, else the mapped key nearest it (the lower on a tie)."""
        for distance in range(128):
            for candidate in (key - distance, key + distance):
                if 0 <= candidate < 128 and self._cents[candidate] is not None:
                    return candidate
        return None

    def pitch_classes(self) -> frozenset[int] | None:
        """The scale as pitch classes of the keys that play it, when the mapping repeats every
        12 keys (the default mapping and 12-key ``.kbm`` files); None when it does not, because
        then a 12-class mask cannot say which keys are in the scale."""
        pattern = self.mapping.mapping
        if len(pattern) != 12:
            return None
        return frozenset((self.mapping.middle_key + i) % 12 for i, degree in enumerate(pattern)
                         if degree is not None)


_DIGITS = re.compile(r"[0-9]{1,12}")
_CENTS = re.compile(r"-?(?=[0-9]*\.?[0-9])[0-9]*\.[0-9]*")


def _natural(token: str) -> int | None:
    """An unsigned ASCII decimal of at most 12 digits, or None (``str.isdigit`` also accepts
    other scripts' digits, which ``int`` may refuse)."""
    return int(token) if _DIGITS.fullmatch(token) else None


def _clean(line: str) -> str:
    return line.strip().replace("\t", " ")


def _data_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not a comment."""
    return [(number, line.rstrip("\r\n")) for number, line in enumerate(text.splitlines(), 1)
            if not line.lstrip().startswith("!")]


def _pitch_cents(text: str, where: str) -> float:
    token = _clean(text).split(" ", 1)[0] if _clean(text) else ""
    if not token:
        raise TuningError(f"{where}: empty pitch line; write cents (with a period, e.g. 701.955) or a ratio (3/2)")
    if "." in token:
        if not _CENTS.fullmatch(token):
            raise TuningError(f"{where}: {token!r} is not a cents value")
        return float(token)
    numerator, _, denominator = token.partition("/")
    terms = (_natural(numerator), _natural(denominator or "1"))
    if terms[0] is None or terms[1] is None or token.count("/") > 1:
        raise TuningError(f"{where}: {token!r} is neither cents (with a period) nor a ratio such as 5/4")
    ratio_terms = (terms[0], terms[1])
    if max(ratio_terms) > _MAX_TERM:
        raise TuningError(f"{where}: {token!r} has a term above 2147483647")
    if 0 in ratio_terms:
        raise TuningError(f"{where}: {token!r} is not a positive ratio")
    return 1200 * math.log2(Fraction(*ratio_terms))


def parse_scl(text: str, source: str = "<scale>") -> Scale:
    """A Scala scale from the text of a ``.scl`` file; TuningError names the line at fault."""
    lines = _data_lines(text)
    if len(lines) < 2:
        raise TuningError(f"{source}: a .scl file needs a description line and a line with the number of notes")
    description = lines[0][1].strip()
    number, count_text = lines[1]
    token = _clean(count_text).split(" ", 1)[0] if _clean(count_text) else ""
    count = _natural(token)
    if count is None:
        raise TuningError(f"{source}:{number}: expected the number of notes, got {count_text.strip()[:40]!r}")
    if count > MAX_NOTES:
        raise TuningError(f"{source}:{number}: {count} notes; at most {MAX_NOTES} are read")
    pitch_lines = [(n, line) for n, line in lines[2:] if line.strip()]
    if len(pitch_lines) < count:
        raise TuningError(f"{source}:{number}: says {count} notes but {len(pitch_lines)} pitch lines follow")
    if len(pitch_lines) > count:
        raise TuningError(f"{source}:{pitch_lines[count][0]}: more pitch lines than the {count} "
                          f"announced on line {number}")
    cents = tuple(_pitch_cents(line, f"{source}:{n}") for n, line in pitch_lines)
    if cents and cents[-1] <= 0:
        raise TuningError(f"{source}:{pitch_lines[count - 1][0]}: the last degree is the period and must be above 1/1")
    return Scale(description, cents, source)


_KBM_FIELDS = ("size of map", "first MIDI key", "last MIDI key", "middle key", "reference key",
               "reference frequency", "formal octave degree")


def parse_kbm(text: str, source: str = "<mapping>") -> KeyboardMapping:
    """A Scala keyboard mapping from the text of a ``.kbm`` file; errors name the line."""
    lines = [(n, _clean(line)) for n, line in _data_lines(text) if _clean(line)]
    if len(lines) < len(_KBM_FIELDS):
        missing = _KBM_FIELDS[len(lines)]
        raise TuningError(f"{source}: ends before the {missing} line (a .kbm file has 7 header lines, then the map)")
    values: list[float] = []
    for (n, line), name in zip(lines, _KBM_FIELDS):
        token = line.split(" ", 1)[0]
        sign, digits = ("-", token[1:]) if token.startswith("-") else ("", token)
        if name == "reference frequency":
            value = float(token) if _CENTS.fullmatch(token) or _natural(token) is not None else None
        else:
            value = None if _natural(digits) is None else int(sign + digits)
        if value is None:
            raise TuningError(f"{source}:{n}: expected the {name}, got {line[:40]!r}")
        values.append(value)
    size, first, last, middle, reference, hz, octave = values
    for name, value, index in (("first MIDI key", first, 1), ("last MIDI key", last, 2),
                               ("middle key", middle, 3), ("reference key", reference, 4)):
        if not 0 <= value <= 127:
            raise TuningError(f"{source}:{lines[index][0]}: the {name} {int(value)} is outside 0..127")
    if not 0 <= size <= 128:
        raise TuningError(f"{source}:{lines[0][0]}: map size {int(size)} is outside 0..128")
    if not (math.isfinite(hz) and 1.0 <= hz <= 30000.0):
        raise TuningError(f"{source}:{lines[5][0]}: reference frequency {hz} Hz is outside 1..30000")
    if octave < 0:
        raise TuningError(f"{source}:{lines[6][0]}: the formal octave degree must not be negative")
    entries = lines[len(_KBM_FIELDS):]
    if len(entries) > size:
        raise TuningError(f"{source}:{entries[int(size)][0]}: more map entries than the map size {int(size)}"
                          f" given on line {lines[0][0]}")
    mapping: list[int | None] = []
    for n, line in entries:
        token = line.split(" ", 1)[0]
        if token.lower() == "x":
            mapping.append(None)
        elif _natural(token) is not None:
            mapping.append(int(token))
        else:
            raise TuningError(f"{source}:{n}: a map entry is a scale degree or x, not {token!r}")
    mapping += [None] * (int(size) - len(mapping))  # unmapped keys may be left out at the end
    return KeyboardMapping(tuple(mapping), int(first), int(last), int(middle), int(reference), hz, int(octave), source)


def _read(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TuningError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > 1 << 20:
        raise TuningError(f"{path}: {len(data)} bytes is too large for a {what}")
    return data.decode("latin-1")  # the format's character set (ISO 8859-1 or its ASCII subset)


# The files in core/tunings (tests/test_tuning.py checks the two agree): a constant, so that
# engines can offer them as parameter choices without reading a folder when imported.
PRESETS = ("12tet", "dorian", "just_major", "kamale_ngoni", "kora_hardino", "kora_sauta", "kora_silaba",
           "kora_tomora_ba", "kora_tomora_mesengo", "locrian", "lydian", "major", "mande_balafon",
           "meantone_quarter_comma", "minor", "mixolydian", "pentatonic_major", "pentatonic_minor",
           "phrygian", "pythagorean", "werckmeister_iii")


def preset_names() -> tuple[str, ...]:
    """The shipped presets."""
    return PRESETS


@functools.cache
def preset_pitch_classes(name: str) -> frozenset[int] | None:
    """The pitch classes of preset ``name`` (an engine's ``tuning`` parameter); None for "off" or a
    scale that covers all twelve, which restricts nothing."""
    if name == "off":
        return None
    classes = load_tuning(name).pitch_classes()
    return None if classes is None or len(classes) == 12 else classes


def load_tuning(spec: str | os.PathLike[str], kbm: str | os.PathLike[str] | None = None) -> Tuning:
    """A tuning from a preset name or a ``.scl`` path, with an optional ``.kbm`` path; without
    one, a scale of at most 12 degrees over about an octave gets the nearest-key mapping and any
    other scale the linear mapping with its 1/1 on middle C."""
    text = os.fspath(spec)
    path = Path(text)
    if path.suffix.lower() != ".scl":
        if text not in preset_names():
            raise TuningError(f"--tuning {text!r}: not a .scl file nor a preset; presets: {', '.join(preset_names())}")
        path = PRESET_DIR / f"{text}.scl"
    scale = parse_scl(_read(path, "scale"), str(path) if path.parent != PRESET_DIR else path.name)
    if kbm is not None:
        kbm_path = Path(kbm)
        mapping = parse_kbm(_read(kbm_path, "keyboard mapping"), str(kbm_path))
    elif 1 <= scale.size <= 12 and abs(scale.period_cents - 1200) < 50:
        mapping = nearest_mapping(scale)
    else:
        mapping = KeyboardMapping(source="linear")
    return Tuning(scale, mapping, path.stem)
