"""Scala parsing (strict, errors naming the line, fuzzed), presets, and the MTS/MPE/nearest retuner."""

from __future__ import annotations

import math
import re

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.retune import Retuner, mts_table, retune_file
from core.tuning import (
    PRESET_DIR,
    PRESETS,
    KeyboardMapping,
    Scale,
    Tuning,
    TuningError,
    load_tuning,
    parse_kbm,
    parse_scl,
    preset_names,
)

# The example file of huygens-fokker.org/scala/scl_format.html, comments and labels included.
MEANTONE = """! meanquar.scl
!
1/4-comma meantone scale. Pietro Aaron's temperament (1523)
 12
!
 76.04900
 193.15686
 310.26471
 5/4
 503.42157
 579.47057
 696.57843
 25/16
 889.73529
 1006.84314
 1082.89214
 2/1
"""

# help.htm#mappings: 12 keys per pattern, A4 = 440 on key 69, one key left unmapped.
KBM = """! example.kbm
! Size of map:
12
! First MIDI note number to retune:
0
! Last MIDI note number to retune:
127
! Middle note where the first entry of the mapping is mapped to:
60
! Reference note for which frequency is given:
69
! Frequency to tune the above note to
440.0
! Scale degree to consider as formal octave:
12
! Mapping.
0
x
2
3
4
5
6
7
8
9
10
11
"""


def test_the_format_pages_example_parses_to_its_cents():
    scale = parse_scl(MEANTONE, "meanquar.scl")
    assert scale.description.startswith("1/4-comma meantone")
    assert scale.size == 12
    assert scale.cents[3] == pytest.approx(1200 * math.log2(5 / 4))
    assert scale.cents[0] == pytest.approx(76.049)
    assert scale.period_cents == pytest.approx(1200.0)


def test_pitch_lines_the_format_allows():
    # "these lines are all valid pitch lines" (scl_format.html), plus a label after the value
    text = "x\n 9\n81/64\n408.0\n408.\n5\n-5.0\n10/20\n100.0 cents\n 100.0 C#\n 5/4   E\\\n"
    cents = parse_scl(text).cents
    assert cents == pytest.approx([407.82, 408.0, 408.0, 2786.31, -5.0, -1200.0, 100.0, 100.0, 386.31], abs=0.01)


@pytest.mark.parametrize(("text", "line", "words"), [
    ("desc\n 3\n100.0\n200.0\n", 2, "says 3 notes but 2"),
    ("desc\nthree\n100.0\n", 2, "number of notes"),
    ("desc\n 2\n100.0\n-3/2\n", 4, "neither cents"),
    ("desc\n 2\n100.0\n3/0\n", 4, "not a positive ratio"),
    ("desc\n 1\n1/2/3\n", 3, "neither cents"),
    ("desc\n 1\nabc\n", 3, "neither cents"),
    ("desc\n 1\n1200.0\n1300.0\n", 4, "more pitch lines"),
    ("desc\n 1\n4294967296/1\n", 3, "above 2147483647"),
    ("desc\n 1\nnan.\n", 3, "not a cents value"),
    ("desc\n 1\n0.0\n", 3, "period"),
    ("desc\n 1\n\u00b2\n", 3, "neither cents"),  # a digit to str.isdigit, not to int
    ("desc\n " + "9" * 5000 + "\n", 2, "number of notes"),
    ("desc\n 1\n1_200.0\n", 3, "not a cents value"),
])
def test_bad_scales_name_the_line(text, line, words):
    with pytest.raises(TuningError, match=rf"^bad\.scl:{line}: .*{re.escape(words)}"):
        parse_scl(text, "bad.scl")


def test_keyboard_mapping_maps_keys_and_reference():
    tuning = Tuning(parse_scl(MEANTONE), parse_kbm(KBM, "example.kbm"))
    assert tuning.frequency(69) == pytest.approx(440.0)
    assert tuning.cents(61) is None  # the x entry
    assert tuning.cents(73) is None
    # key 64 plays degree 4 (5/4 above the 1/1 on key 60): 386.3 cents above key 60
    assert tuning.cents(64) - tuning.cents(60) == pytest.approx(1200 * math.log2(5 / 4))
    assert tuning.cents(72) - tuning.cents(60) == pytest.approx(1200.0)
    assert tuning.pitch_classes() == frozenset(range(12)) - {1}


@pytest.mark.parametrize(("change", "line", "words"), [
    (("12", "130"), 3, "map size 130"),
    (("127\n! Middle", "128\n! Middle"), 7, "last MIDI key 128"),
    (("440.0", "0.5"), 13, "reference frequency"),
    (("\n9\n10\n11\n", "\n9\n10\n11\n11\n"), 29, "more map entries"),
    (("\n4\n", "\nfour\n"), 21, "scale degree or x"),
])
def test_bad_mappings_name_the_line(change, line, words):
    text = KBM.replace(*change, 1)
    with pytest.raises(TuningError, match=rf"^m\.kbm:{line}: .*{re.escape(words)}"):
        parse_kbm(text, "m.kbm")


def test_a_mapping_whose_reference_key_is_unmapped_is_refused():
    with pytest.raises(TuningError, match="reference key 61 is not mapped"):
        Tuning(parse_scl(MEANTONE), parse_kbm(KBM.replace("\n69\n", "\n61\n"), "m.kbm"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789./!x -\n\tabcE")), max_size=200))
def test_fuzzed_scales_and_mappings_parse_or_fail_cleanly(text):
    for parse in (parse_scl, parse_kbm):
        try:
            result = parse(text, "fuzz")
        except TuningError as exc:
            assert str(exc).startswith("fuzz")
            continue
        if isinstance(result, Scale):
            assert all(math.isfinite(c) for c in result.cents)
        else:
            assert isinstance(result, KeyboardMapping)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["12", "0", "127", "60", "440.0", "x", "!"])),
                max_size=30))
def test_fuzzed_lines_of_any_characters_parse_or_fail_cleanly(lines):
    text = "\n".join(lines)
    for parse in (parse_scl, parse_kbm):
        try:
            parse(text, "fuzz")
        except TuningError as exc:
            assert str(exc).startswith("fuzz")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1.0, 2400.0), min_size=1, max_size=24))
def test_written_scales_read_back(cents):
    cents = sorted(cents)
    text = "fuzz scale\n" + f" {len(cents)}\n" + "".join(f" {c:.6f}\n" for c in cents)
    assert parse_scl(text).cents == pytest.approx(cents, abs=1e-6)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_cites_a_source_and_keeps_middle_c(name):
    tuning = load_tuning(name)
    assert tuning.frequency(60) == pytest.approx(261.6256, abs=1e-3)
    comments = [line for line in (PRESET_DIR / f"{name}.scl").read_text().splitlines() if line.startswith("! ")]
    assert len(comments) >= 2  # a comment block that says where the numbers come from
    classes = tuning.pitch_classes()
    assert classes is not None and 0 in classes and len(classes) == tuning.scale.size


def test_the_preset_list_is_the_preset_folder():
    assert set(PRESETS) == {p.stem for p in PRESET_DIR.glob("*.scl")}


def test_preset_values_match_their_definitions():
    balafon = load_tuning("mande_balafon")
    assert [balafon.scale.degree_cents(d) for d in range(8)] == pytest.approx([1200 * d / 7 for d in range(8)])
    werckmeister = load_tuning("werckmeister_iii").scale.cents
    assert werckmeister[:4] == pytest.approx([90.225, 192.180, 294.135, 390.225], abs=1e-3)
    assert load_tuning("kora_tomora_mesengo").scale.cents[:2] == pytest.approx([230.0, 325.0])  # kora2.scl
    assert load_tuning("kamale_ngoni").pitch_classes() == frozenset({0, 2, 5, 7, 10})


def test_unknown_tuning_lists_the_presets(tmp_path):
    with pytest.raises(TuningError, match="presets: .*kora_hardino"):
        load_tuning("hardino")
    with pytest.raises(TuningError, match="cannot read the scale"):
        load_tuning(tmp_path / "missing.scl")


def _note(kind, note, channel=0, velocity=100):
    return mido.Message(kind, channel=channel, note=note, velocity=velocity if kind == "note_on" else 0)


def test_mts_table_encodes_each_key_to_a_hundredth_of_a_cent():
    tuning = load_tuning("mande_balafon")
    table = mts_table(tuning)
    assert [m.data[:6] for m in table] == [(0x7F, 0x7F, 0x08, 0x02, 0, 64)] * 2
    entries = {}
    for message in table:
        body = message.data[6:]
        for i in range(0, len(body), 4):
            key, whole, msb, lsb = body[i: i + 4]
            entries[key] = 100 * whole + 100 * ((msb << 7) | lsb) / 16384
    assert sorted(entries) == list(range(128))
    for key in tuning.mapped_keys():
        assert entries[key] == pytest.approx(tuning.cents(key), abs=0.01)


def test_mpe_gives_each_note_a_channel_and_bend_and_ends_it_there():
    tuning = load_tuning("mande_balafon")  # key 70 plays degree 6, 1028.6 cents: off every key
    retuner = Retuner(tuning, "mpe")
    setup = retuner.start()
    assert setup[:3] == [mido.Message("control_change", channel=0, control=101, value=0),
                         mido.Message("control_change", channel=0, control=100, value=6),
                         mido.Message("control_change", channel=0, control=6, value=15)]
    chord = [retuner.convert(_note("note_on", k)) for k in (60, 64, 70)]
    channels = [out[-1].channel for out in chord]
    assert len(set(channels)) == 3 and 0 not in channels
    bend, note = chord[2]
    assert bend.type == "pitchwheel" and note.note in (70, 71)
    sounding = 100 * note.note + bend.pitch / 8192 * 4800
    assert sounding == pytest.approx(tuning.cents(70), abs=0.6)
    off = retuner.convert(_note("note_off", 70))
    assert off == [mido.Message("note_off", channel=channels[2], note=note.note, velocity=0)]
    assert retuner.convert(_note("note_off", 70)) == []  # a stray note-off sends nothing


def test_mpe_steals_the_oldest_note_when_every_channel_is_busy():
    retuner = Retuner(load_tuning("12tet"), "mpe", mpe_members=2)
    first = retuner.convert(_note("note_on", 60))[-1]
    retuner.convert(_note("note_on", 62))
    third = retuner.convert(_note("note_on", 64))
    assert third[0] == mido.Message("note_off", channel=first.channel, note=60)
    assert retuner.stolen == 1
    assert retuner.convert(_note("note_off", 60)) == []


def test_nearest_key_and_unmapped_keys():
    tuning = load_tuning("kamale_ngoni")
    none = Retuner(tuning, "none")
    assert none.convert(_note("note_on", 61))[-1].note == 60  # C# is not in the scale: its nearest degree
    assert none.snapped == 1
    balafon = Retuner(load_tuning("mande_balafon"), "none")
    # degree 2 (342.9 cents) sits on key 63 and sounds nearest to Eb
    assert balafon.convert(_note("note_on", 63))[-1].note == 63
    mts = Retuner(tuning, "mts")
    assert mts.convert(_note("note_on", 64))[-1].note in (62, 65)


def test_a_tuning_change_retunes_sounding_notes_and_note_offs_follow_their_note_on():
    retuner = Retuner(load_tuning("kora_hardino"), "mpe")
    on = retuner.convert(_note("note_on", 64))
    changed = retuner.set_tuning(load_tuning("kora_tomora_mesengo"))
    assert [m.channel for m in changed] == [on[-1].channel]
    assert changed[0].pitch != on[0].pitch
    assert retuner.convert(_note("note_off", 64)) == [mido.Message("note_off", channel=on[-1].channel,
                                                                   note=on[-1].note, velocity=0)]
    none = Retuner(load_tuning("kora_tomora_ba"), "none")
    key = none.convert(_note("note_on", 70))[-1].note
    none.set_tuning(load_tuning("kora_silaba"))
    assert none.convert(_note("note_off", 70))[-1].note == key


def test_retuned_files_keep_tracks_times_and_every_note_closed():
    midi = mido.MidiFile(ticks_per_beat=480)
    for offset in (0, 7):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=f"t{offset}")])
        for i in range(6):
            track += [_note("note_on", 60 + offset + i), _note("note_off", 60 + offset + i).copy(time=240)]
        midi.tracks.append(track)
    for mode in ("mts", "mpe", "none"):
        out = retune_file(midi, load_tuning("mande_balafon"), mode)
        assert [t.name for t in out.tracks] == ["t0", "t7"]
        assert out.length == pytest.approx(midi.length)
        for track in out.tracks:
            open_notes = set()
            for message in track:
                if message.type == "note_on" and message.velocity:
                    open_notes.add((message.channel, message.note))
                elif message.type in ("note_on", "note_off"):
                    open_notes.discard((message.channel, message.note))
            assert not open_notes


def test_bad_modes_are_refused():
    with pytest.raises(ValueError, match="use one of mts, mpe, none"):
        Retuner(Tuning.equal(), "scala")
