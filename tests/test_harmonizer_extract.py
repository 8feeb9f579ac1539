"""Extraction from a real music21 corpus score, split stability, and runtime import hygiene."""

import subprocess
import sys

import numpy as np
import pytest

from engines.harmonizer.dataset import split_of
from engines.harmonizer.vocab import token_id


def test_extract_a_bach_chorale() -> None:
    corpus = pytest.importorskip("music21.corpus")
    from engines.harmonizer.extract import extract_piece

    piece = extract_piece(corpus.parse("bach/bwv269"), "bach/bwv269.mxl", style=0)
    assert piece.time_signature == (3, 4)
    assert (piece.shift, piece.mode) == (5, "major")  # G major -> C major
    assert piece.melody_pitch[0] == 72  # the soprano's G4 lands on C5
    assert piece.bar_start.sum() == 24
    assert piece.chord[0] == token_id("C:maj")
    assert piece.va.shape == (len(piece.chord), 2) and np.abs(piece.va).max() <= 1.0
    # the texture always contains the melody's pitch class where the melody sounds
    sounding = piece.melody_pitch >= 0
    assert piece.texture[sounding, piece.melody_pitch[sounding] % 12].all()


def test_voice_counts_and_note_starts() -> None:
    corpus = pytest.importorskip("music21.corpus")
    from engines.harmonizer.extract import extract_piece

    piece = extract_piece(corpus.parse("bach/bwv269"), "bach/bwv269.mxl", style=0)
    assert ((piece.voices > 0) == (piece.texture > 0)).all()
    assert piece.voices.sum(1).max() <= 8 and piece.voices[0].sum() == 4  # four voices sound
    assert piece.struck[0].sum() >= 1 and (piece.struck <= (piece.voices > 0)).all()


def test_folk_melody_is_key_normalized_with_bars() -> None:
    stream = pytest.importorskip("music21.stream")
    from music21 import meter, note

    from engines.harmonizer.folk import melody_piece

    part = stream.Part()
    for bar, pitches in enumerate((("G4", "B4", "D5"), ("G4", "A4", "F#4"), ("G4", "D4", "G4"))):
        measure = stream.Measure(number=bar + 1)
        if bar == 0:
            measure.append(meter.TimeSignature("3/4"))
        for name in pitches:
            measure.append(note.Note(name, quarterLength=1.0))
        part.append(measure)
    piece = melody_piece(stream.Score([part]), "made-up")
    assert (piece.shift, piece.mode) == (5, "major")  # G major -> C major
    assert piece.melody_pitch[0] == 72 and piece.time_signature == (3, 4)
    assert piece.bar_start.nonzero()[0].tolist() == [0, 12, 24]
    assert piece.melody_onset.sum() == 9 and piece.texture.sum() == 0


def test_split_is_stable_and_groups_movements() -> None:
    assert split_of("bach/bwv269.mxl") == split_of("bach/bwv269.mxl")
    movements = {split_of(f"haydn/opus74no1/movement{i}.mxl") for i in range(1, 5)}
    assert len(movements) == 1
    splits = [split_of(f"piece{i}.mxl") for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85


def test_runtime_modules_do_not_import_torch_or_music21() -> None:
    code = (
        "import sys\n"
        "import engines.harmonizer, engines.harmonizer.dataset, engines.harmonizer.metrics\n"
        "import engines.harmonizer.harmony_eval, engines.harmonizer.folk, cli.eval_harmony\n"
        "print(sorted(m for m in ('torch', 'music21') if m in sys.modules))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"
