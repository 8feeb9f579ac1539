"""The two-hand corpus build (training/continuation/twohands.py) on tiny synthetic POP909 folders."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from training.continuation import twohands
from training.continuation.twohands import LOWER, UPPER, assign_hands, grid_moves, seconds_to_ticks, split_of_song

TPQ = 480


def _track(name: str, notes: list[tuple[int, int, int]]) -> mido.MidiTrack:
    """A named track of (start tick, end tick, pitch) notes."""
    events = []
    for start, end, pitch in notes:
        events += [(start, 1, mido.Message("note_on", note=pitch, velocity=80)),
                   (end, 0, mido.Message("note_off", note=pitch, velocity=0))]
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    return track


def _song(folder: Path, tempos: list[tuple[int, int]], melody, bridge, piano, beat_seconds, beats_per_bar=4,
          key="C:maj") -> Path:
    """A POP909-like folder: NNN.mid (conductor + MELODY, BRIDGE, PIANO), beat_midi.txt, key_audio.txt."""
    folder.mkdir(parents=True)
    midi = mido.MidiFile(ticks_per_beat=TPQ)
    conductor = mido.MidiTrack()
    now = 0
    for tick, tempo in tempos:
        conductor.append(mido.MetaMessage("set_tempo", tempo=tempo, time=tick - now))
        now = tick
    midi.tracks += [conductor, _track("MELODY", melody), _track("BRIDGE", bridge), _track("PIANO", piano)]
    midi.save(folder / f"{folder.name}.mid")
    rows = [f"{s} {1.0 if i % 2 == 0 else 0.0} {1.0 if i % beats_per_bar == 0 else 0.0}"
            for i, s in enumerate(beat_seconds)]
    (folder / "beat_midi.txt").write_text("\n".join(rows) + "\n")
    (folder / "key_audio.txt").write_text(f"0.0 100.0 {key}\n")
    return folder


def _steady(folder: Path, pitch: int = 72) -> Path:
    """Eight bars at 120 bpm: a quarter-note tune over a half-note bass."""
    melody = [(q * TPQ, (q + 1) * TPQ, pitch + q % 3) for q in range(32)]
    piano = [(q * TPQ, (q + 2) * TPQ, 48) for q in range(0, 32, 2)]
    return _song(folder, [(0, 500_000)], melody, [], piano, [0.5 * b for b in range(32)])


def test_tempo_change_mid_song_maps_seconds_and_notes_to_beats(tmp_path):
    # 120 bpm for four quarters (2 s), then 60 bpm: 3 s is quarter 5, 4 s quarter 6
    tempos = [(0, 500_000), (4 * TPQ, 1_000_000)]
    beat_seconds = [0.5 * b for b in range(4)] + [2.0 + b for b in range(8)]
    melody = [(5 * TPQ, 6 * TPQ, 72), (6 * TPQ + TPQ // 3, 7 * TPQ, 74)]
    folder = _song(tmp_path / "001", tempos, melody, [], [(4 * TPQ, 8 * TPQ, 48)], beat_seconds)
    midi = mido.MidiFile(folder / "001.mid")
    assert seconds_to_ticks(midi, [1.0, 2.0, 3.0, 4.5]) / TPQ == pytest.approx([2.0, 4.0, 5.0, 6.5])
    song = twohands.read_pop909(folder)
    upper = song.notes[song.notes[:, 4] == UPPER]
    assert upper[:, 1].tolist() == pytest.approx([5.0, 6 + 1 / 3])
    assert upper[:, 2].tolist() == pytest.approx([6.0, 7.0])
    assert song.time_signature == "4/4" and song.key == "C:maj"


def test_pickup_goes_back_whole_bars_and_beats_must_be_quarters(tmp_path):
    # the first annotated downbeat is at quarter 1 (0.5 s); a pickup note at quarter 0 -> bar before
    beats = [0.5 * b for b in range(1, 17)]
    folder = _song(tmp_path / "002", [(0, 500_000)], [(0, TPQ, 72), (TPQ, 2 * TPQ, 74)], [],
                   [(TPQ, 3 * TPQ, 48)], beats)
    assert twohands.read_pop909(folder).notes[:, 1].min() == pytest.approx(3.0)  # 4 - 1
    halves = _song(tmp_path / "003", [(0, 500_000)], [(0, TPQ, 72)], [], [(0, TPQ, 48)],
                   [0.25 * b for b in range(16)])  # beats every eighth note
    with pytest.raises(ValueError, match="quarter notes"):
        twohands.read_pop909(halves)


def test_hand_assignment_on_a_made_up_song():
    def rows(*notes):
        return np.array([(p, s, e, 80) for p, s, e in notes], dtype=np.float64).reshape(-1, 4)

    melody = rows((72, 0, 1), (74, 1, 2), (76, 2, 4))  # beats 0-4; the tune rests from beat 4
    bridge = rows((67, 0, 1),   # a fifth under the tune -> upper
                  (55, 1, 2),   # 19 semitones under it -> lower
                  (79, 4, 4.25))  # while the tune rests -> upper
    piano = rows((48, 0, 2),    # bass -> lower
                 (72, 0, 1),    # unison of the tune at its onset -> dropped
                 (86, 2, 3),    # an octave over the tune -> upper
                 (64, 2, 3),    # under the tune -> lower
                 (43, 4, 6),    # tune rests: the bass -> lower
                 (52, 4, 5),    # within an octave of the bass -> lower
                 (60, 4.5, 5))  # 17 over the bass -> upper
    notes, counters = assign_hands(melody, bridge, piano)
    hands = {(int(p), float(s)): int(h) for p, s, _, _, h in notes}
    assert hands == {(72, 0.0): UPPER, (74, 1.0): UPPER, (76, 2.0): UPPER, (67, 0.0): UPPER, (55, 1.0): LOWER,
                     (79, 4.0): UPPER, (48, 0.0): LOWER, (86, 2.0): UPPER, (64, 2.0): LOWER, (43, 4.0): LOWER,
                     (52, 4.0): LOWER, (60, 4.5): UPPER}
    assert counters["piano_unison_dropped"] == 1 and counters["piano_upper_over_tune"] == 1
    assert counters["piano_upper_tune_rests"] == 1 and counters["bridge_lower"] == 1
    assert list(notes[:, 1]) == sorted(notes[:, 1])


def test_split_is_seeded_deterministic_and_disjoint(tmp_path):
    datasets = tmp_path / "data"
    for number in range(1, 13):
        _steady(datasets / "pop909" / "POP909" / f"{number:03d}", pitch=70 + number % 5)
    lists = []
    for run in range(2):
        splits = tmp_path / f"splits{run}"
        twohands.build(datasets, tmp_path / f"cache{run}", music21=False, splits_dir=splits)
        lists.append({s: (splits / f"twohands_{s}.txt").read_text().split() for s in ("train", "val", "test")})
    assert lists[0] == lists[1]
    members = [song for names in lists[0].values() for song in names]
    assert sorted(members) == [f"pop909/{n:03d}" for n in range(1, 13)] and len(set(members)) == len(members)
    shares = Counter(split_of_song(f"pop909/{n:03d}") for n in range(1, 910))
    assert 0.75 < shares["train"] / 909 < 0.85 and 0.06 < shares["val"] / 909 < 0.14
    assert split_of_song("pop909/001", seed="other") in ("train", "val", "test")
    assert [split_of_song(f"pop909/{n:03d}", seed="other") for n in range(1, 60)] != [
        split_of_song(f"pop909/{n:03d}") for n in range(1, 60)]


def test_a_broken_song_is_skipped_and_listed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(twohands, "SPLITS_DIR", tmp_path / "splits")  # the CLI writes the committed lists
    root = tmp_path / "data" / "pop909" / "POP909"
    _steady(root / "001")
    broken = root / "002"
    broken.mkdir(parents=True)
    (broken / "002.mid").write_bytes(b"MThd not a midi file")
    (broken / "beat_midi.txt").write_text("0.0 1.0 1.0\n0.5 0.0 0.0\n")
    (root / "003").mkdir()  # no files at all
    code = twohands.main(["build", "--datasets", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"),
                          "--no-music21"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    record = json.loads((tmp_path / "cache" / twohands.BUILD_FILE).read_text())
    assert record["songs"] == 1
    assert [line.split(":")[0] for line in record["skipped"]] == ["002", "003"]
    assert "not a readable MIDI file" in record["skipped"][0] and "skipped 002" in err
    data = twohands.load(tmp_path / "cache")
    assert data["song_ids"].tolist() == ["pop909/001"] and set(data["hand"].tolist()) == {UPPER, LOWER}
    assert twohands.main(["build", "--datasets", str(tmp_path / "nowhere"), "--no-music21",
                          "--cache", str(tmp_path / "c2")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_grid_round_trip_on_hand_made_rhythms():
    dotted = np.array([b + x for b in range(4) for x in (0.0, 0.75, 0.875)])  # dotted 8th, 16th, 32nd
    dotted_16th = np.array([b + x for b in range(4) for x in (0.0, 0.375, 0.5)])  # dotted 16th + 32nd + 8th
    triplets = np.array([b + x for b in range(4) for x in (0.0, 1 / 3, 2 / 3)])
    assert grid_moves(dotted_16th, "12")["moved"] == pytest.approx(1 / 3)
    assert grid_moves(dotted_16th, "12")["mean_beats"] == pytest.approx(abs(0.375 - 4 / 12))
    assert grid_moves(dotted_16th, "24")["moved"] == 0.0
    assert grid_moves(dotted, "16")["moved"] == 0.0 and grid_moves(dotted, "12")["moved"] == pytest.approx(1 / 3)
    assert grid_moves(triplets, "16")["moved"] == pytest.approx(2 / 3)
    assert grid_moves(triplets, "12")["moved"] == 0.0 and grid_moves(triplets, "12|16")["moved"] == 0.0
    assert grid_moves(dotted_16th, "12|16")["moved"] == 0.0 and grid_moves(dotted_16th, "48")["moved"] == 0.0
    swing = np.array([b + x for b in range(4) for x in (0.0, 2 / 3)])
    assert grid_moves(swing, "4")["moved"] == pytest.approx(0.5) and grid_moves(swing, "24")["moved"] == 0.0
    assert grid_moves(np.array([1 / 3 + 1 / 1000]), "12")["moved"] == 0.0  # within the tolerance
    assert twohands.shift_tokens("12") == 48 and twohands.shift_tokens("48") == 192


def test_stats_reports_per_hand_checks(tmp_path):
    datasets = tmp_path / "data"
    _steady(datasets / "pop909" / "POP909" / "001")
    twohands.build(datasets, tmp_path / "cache", music21=False, splits_dir=tmp_path / "splits")
    report = twohands.stats(tmp_path / "cache", grids=True)["pop909"]
    assert report["upper"]["median_pitch"] == 73.0 and report["lower"]["median_pitch"] == 48.0
    assert report["upper"]["onsets_per_beat"] == pytest.approx(1.0)
    assert report["lower"]["onsets_per_beat"] == pytest.approx(0.5)
    assert report["crossing_notes"] == 0 and report["overlap_notes"] == 0
    assert report["grids"]["4"]["onsets"]["moved"] == 0.0


def test_the_committed_split_lists_hold_the_whole_corpus_once():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "engines" / "continuation" / "splits"
    lists = {split: (folder / f"twohands_{split}.txt").read_text().split() for split in ("train", "val", "test")}
    ids = [piece for pieces in lists.values() for piece in pieces]
    assert len(ids) == len(set(ids)) == 928  # 909 POP909 songs + 19 music21 keyboard scores, each once
    assert sum(piece.startswith("pop909/") for piece in ids) == 909
