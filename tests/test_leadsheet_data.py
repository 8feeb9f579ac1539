"""Lead-sheet readers (engines/harmonizer/leadsheet_corpus.py, pop909.py, chord_symbols.py) and
the training build (training/harmonizer/leadsheets.py) on tiny hand-made songs.

No dependency on the real data sets: a MusicXML lead sheet is written with music21 and a
POP909-like folder (MIDI with a tempo change + chord/beat/key text files) with mido.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest

from engines.harmonizer.chord_symbols import SymbolMapper, harte_chord, music21_chord
from engines.harmonizer.leadsheet_corpus import CACHE_FILE, STYLES, parse_openewld_score, sheets_to_arrays
from engines.harmonizer.pop909 import read_pop909_song
from engines.harmonizer.vocab import NC, token_id
from training.harmonizer import leadsheets
from training.harmonizer.leadsheets import assign_splits, statistics


def test_styles_keep_the_shipped_ids() -> None:
    assert STYLES[:3] == ("chorale", "classical", "renaissance")
    assert {"pop", "rock", "jazz", "stage", "folk"} <= set(STYLES)


@pytest.mark.parametrize(
    ("label", "name", "bass"),
    [
        ("C:maj", "C:maj", 0),
        ("A:min/b3", "A:min", 0),  # slash bass on a chord tone stays in the bass array
        ("G:maj/3", "G:maj", 11),
        ("D:maj7/7", "D:maj7", 1),
        ("Bb:7/b7", "A#:7", 8),
        ("F#:hdim7", "F#:hdim7", 6),
        ("G:sus4(b7)", "G:sus4", 7),  # outside the vocabulary: nearest quality of the same root
    ],
)
def test_harte_labels_map_to_tokens(label: str, name: str, bass: int) -> None:
    assert harte_chord(label, SymbolMapper()) == (token_id(name), bass)


def test_harte_no_chord_and_bad_labels() -> None:
    mapper = SymbolMapper()
    assert harte_chord("N", mapper) == (NC, -1)
    with pytest.raises(ValueError, match="quality"):
        harte_chord("C:weird", mapper)
    with pytest.raises(ValueError, match="root"):
        harte_chord("H:maj", mapper)


def test_music21_symbols_slash_and_out_of_vocabulary() -> None:
    from music21 import harmony

    mapper = SymbolMapper()

    def mapped(figure: str) -> tuple[str, int]:
        from engines.harmonizer.vocab import token_name

        token, bass = music21_chord(harmony.ChordSymbol(figure), mapper)
        return token_name(token), bass

    assert mapped("Em7b5") == ("E:hdim7", 4)
    assert mapped("C/E") == ("C:maj", 4)
    assert mapped("Am/F") == ("F:maj7", 5)  # a foreign bass that makes a vocabulary chord as root
    assert mapped("F/G") == ("F:maj", 7)  # no chord of F or G holds F A C G exactly: bass kept apart
    assert mapped("C7sus4") == ("C:sus4", 0)
    assert mapped("C+7") == ("C:7(b13)", 0)  # a tie keeps the seventh and the raised fifth
    assert mapped("C13") == ("C:13", 0)  # by kind, although music21 spells the 11th too
    assert mapped("Cadd9") == ("C:maj", 0)
    assert music21_chord(harmony.NoChord(), mapper) == (NC, -1)
    assert sum(mapper.out_of_vocabulary.values()) == 3  # C7sus4, C+7, Cadd9
    assert mapper.outcomes["exact+slash(bass as root)"] == 1
    assert mapper.outcomes["exact+slash(bass kept apart)"] == 1


def test_musicxml_degrees_count_from_the_dominant_chord() -> None:
    """MusicXML's <degree> 7 is the minor seventh (music21 alone would add a major one)."""
    from music21 import harmony

    from engines.harmonizer.vocab import token_name

    def mapped(kind: str, *degrees: tuple[str, int, int]) -> str:
        symbol = harmony.ChordSymbol(root="B-", kind=kind)
        for mod_type, degree, alter in degrees:
            symbol.addChordStepModification(harmony.ChordStepModification(mod_type, degree, alter))
        return token_name(music21_chord(symbol, SymbolMapper())[0])

    assert mapped("major", ("add", 7, 0)) == "A#:7"
    assert mapped("suspended-fourth", ("add", 7, 0), ("add", 9, 0)) == "A#:11"  # Bb9sus4, not maj9
    assert mapped("minor-seventh", ("alter", 5, -1)) == "A#:hdim7"
    assert mapped("dominant-seventh", ("add", 9, -1)) == "A#:b9"
    assert mapped("major", ("subtract", 3, 0)) == "A#:5"


def _lead_sheet(path: Path) -> Path:
    """Two bars of 6/8 in F major (one flat), chords F | C7/E ... C/Bb | N.C."""
    from music21 import harmony, key, meter, note, stream

    part = stream.Part()
    first = stream.Measure(number=1)
    first.append(key.KeySignature(-1))
    first.append(meter.TimeSignature("6/8"))
    first.insert(0, harmony.ChordSymbol("F"))
    for name in ("F4", "A4", "C5"):
        first.append(note.Note(name, quarterLength=1.0))
    first.insert(1.5, harmony.ChordSymbol("C7/E"))
    second = stream.Measure(number=2)
    second.insert(0, harmony.ChordSymbol("C/B-"))
    second.append(note.Note("B-4", quarterLength=1.5))
    second.append(note.Note("A4", quarterLength=1.5))
    second.insert(1.5, harmony.NoChord())
    third = stream.Measure(number=3)
    third.insert(0, harmony.ChordSymbol("F"))
    third.append(note.Note("F4", quarterLength=3.0))
    for measure in (first, second, third):
        part.append(measure)
    score = stream.Score([part])
    out = path / "song.musicxml"
    score.write("musicxml", fp=str(out))
    return out


def test_openewld_lead_sheet_in_six_eight(tmp_path: Path) -> None:
    from music21 import converter

    score = converter.parse(_lead_sheet(tmp_path))
    mapper = SymbolMapper()
    sheet = parse_openewld_score(score, "openewld/x/song/song.mxl", STYLES.index("folk"), mapper)
    assert sheet.time_signature == (6, 8)
    assert (sheet.tonic, sheet.mode, sheet.shift) == (5, "major", -5)  # F major -> C major
    assert len(sheet) == 36  # three bars of six eighths
    assert list(np.flatnonzero(sheet.bar_start)) == [0, 12, 24]
    assert list(np.flatnonzero(sheet.beat_start)) == [0, 6, 12, 18, 24, 30]  # dotted quarters
    # F | C7/E at the second dotted quarter | C/Bb -> C:7 over Bb | N.C. | F, all a fourth down
    assert sheet.chord[0] == token_id("C:maj") and sheet.chord[5] == token_id("C:maj")
    assert sheet.chord[6] == token_id("G:7") and sheet.bass[6] == 11
    assert sheet.chord[12] == token_id("G:7") and sheet.bass[12] == 5
    assert sheet.chord[18] == NC and sheet.bass[18] == -1
    assert sheet.chord[24] == token_id("C:maj")
    assert list(np.flatnonzero(sheet.chord_onset)) == [0, 6, 12, 24]
    assert sheet.melody_pitch[0] == 60 and sheet.melody_pitch[12] == 65  # F4 -> C4, Bb4 -> F4
    assert list(np.flatnonzero(sheet.melody_onset)) == [0, 4, 8, 12, 18, 24]
    assert set(sheet.key.tolist()) == {0}  # C major after transposition


def _midi(path: Path) -> None:
    """Two 4/4 bars at 480 ticks per quarter: 120 bpm for bar 1, 60 bpm for bar 2."""
    midi = mido.MidiFile(ticks_per_beat=480)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=4 * 480))
    melody = mido.MidiTrack()
    melody.append(mido.MetaMessage("track_name", name="MELODY", time=0))
    for pitch, rest, length in ((72, 0, 480), (76, 3 * 480, 960), (79, 0, 960)):
        melody.append(mido.Message("note_on", note=pitch, velocity=80, time=rest))
        melody.append(mido.Message("note_off", note=pitch, velocity=0, time=length))
    piano = mido.MidiTrack()
    piano.append(mido.MetaMessage("track_name", name="PIANO", time=0))
    piano.append(mido.Message("note_on", note=48, velocity=60, time=0))
    piano.append(mido.Message("note_off", note=48, velocity=0, time=8 * 480))
    midi.tracks.extend([meta, melody, piano])
    midi.save(path)


def _pop909_song(root: Path, name: str = "001", key: str = "D:maj") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    _midi(folder / f"{name}.mid")
    # beat times in seconds: 0.5 s apart in bar 1, 1 s apart in bar 2
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
    flags = [(1, 1), (0, 0), (1, 0), (0, 0), (1, 1), (0, 0), (1, 0), (0, 0)]
    (folder / "beat_midi.txt").write_text("".join(f"{t} {a}.0 {b}.0\n" for t, (a, b) in zip(times, flags)))
    chords = [(0.0, 1.0, "D:maj"), (1.0, 2.0, "B:min/b3"), (2.0, 3.0, "N"), (3.0, 6.0, "A:sus4(b7)")]
    (folder / "chord_midi.txt").write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in chords))
    (folder / "key_audio.txt").write_text(f"0.0\t6.0\t{key}\n")
    return folder


def test_pop909_song_through_a_tempo_change(tmp_path: Path) -> None:
    mapper = SymbolMapper()
    sheet = read_pop909_song(_pop909_song(tmp_path), mapper)
    assert (sheet.tonic, sheet.mode, sheet.shift, sheet.time_signature) == (2, "major", -2, (4, 4))
    assert len(sheet) == 32  # 6 s = 8 quarters through the tempo map
    assert list(np.flatnonzero(sheet.bar_start)) == [0, 16]
    assert list(np.flatnonzero(sheet.beat_start)) == list(range(0, 32, 4))
    names = {0: "C:maj", 8: "A:min", 20: "G:sus4"}  # transposed from D major to C major
    for step, name in names.items():
        assert sheet.chord[step] == token_id(name), step
    assert sheet.bass[8] == 0  # B:min/b3 -> A:min over C
    assert (sheet.chord[16:20] == NC).all() and (sheet.bass[16:20] == -1).all()  # 'N' from 2 s to 3 s
    assert (sheet.chord[20:] == token_id("G:sus4")).all()  # 3 s = quarter 5 after the tempo change
    assert list(np.flatnonzero(sheet.melody_onset)) == [0, 16, 24]
    assert sheet.melody_pitch[16] == 74 and sheet.melody_pitch[24] == 77
    assert mapper.out_of_vocabulary["sus4(b7) -> sus4"] == 1


def test_pop909_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = _pop909_song(tmp_path)
    (folder / "chord_midi.txt").unlink()
    with pytest.raises(ValueError, match="chord_midi.txt"):
        read_pop909_song(folder, SymbolMapper())


def test_split_is_by_song_seeded_and_per_style() -> None:
    ids = [f"openewld/A/Song_{i}/Song_{i}.mxl" for i in range(40)] + ["openewld/B/Song_3/Song_3.mxl"]
    styles = [STYLES.index("jazz")] * 20 + [STYLES.index("folk")] * 21
    splits = assign_splits(ids, styles)
    assert splits == assign_splits(ids, styles)
    assert splits["openewld/B/Song_3/Song_3.mxl"] == splits["openewld/A/Song_3/Song_3.mxl"]
    for style in ("jazz", "folk"):
        chosen = [splits[i] for i, s in zip(ids, styles) if s == STYLES.index(style)]
        assert chosen.count("test") >= 1 and chosen.count("val") >= 1
    assert assign_splits(ids, styles, seed="another") != splits


def test_arrays_statistics_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "datasets" / "pop909" / "POP909"
    sheets = [read_pop909_song(_pop909_song(root, name, key), SymbolMapper())
              for name, key in (("001", "D:maj"), ("002", "E:min"), ("003", "C:maj"))]
    arrays = sheets_to_arrays(sheets, dict.fromkeys((s.piece_id for s in sheets), "train"))
    assert arrays["offsets"].tolist() == [0, 32, 64, 96]
    assert arrays["texture"].shape == (96, 12) and arrays["va"].shape == (96, 2)
    stats = statistics(arrays)["pop909"]
    pop = stats["styles"]["pop"]
    assert (pop["songs"], pop["bars"], pop["beats"], pop["chord_symbols"]) == (3, 6, 24, 9)
    assert pop["changes_per_bar"] == 1.0  # C -> Am -> G7sus4 over two bars
    assert stats["keys"] == {"D major": 1, "E minor": 1, "C major": 1}
    cache = tmp_path / "cache"
    code = leadsheets.main(["build", "--datasets", str(tmp_path / "datasets"), "--sets", "pop909",
                            "--cache", str(cache), "--limit", "3"])
    assert code == 0 and (cache / CACHE_FILE).is_file()
    report = (cache / leadsheets.REPORT_FILE).read_text()
    assert '"out_of_vocabulary": 3' in report
    assert "pop909    pop" in capsys.readouterr().out


def test_missing_datasets_folder_exits_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = leadsheets.main(["build", "--datasets", str(tmp_path / "nowhere"), "--cache", str(tmp_path)])
    assert code == 2
    assert "not found" in capsys.readouterr().err
