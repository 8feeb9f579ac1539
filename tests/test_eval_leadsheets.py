"""`scorebridge eval harmony` on held-out lead sheets: the metrics on hand-made chords, the
systems and the `harmonize` adapter on tiny synthetic songs, the held-out song cache, and the
command on a tiny cache (real ONNX Runtime sessions of the shipped model; no data sets needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from engines.harmonizer import leadsheet_corpus as corpus
from engines.harmonizer import leadsheet_eval as le
from engines.harmonizer import leadsheet_metrics as lm
from engines.harmonizer.chord_symbols import ChordEvent, SymbolMapper, harte_chord
from engines.harmonizer.harmonize import harmonize
from engines.harmonizer.metrics import score_window
from engines.harmonizer.runtime import HarmonizerModel
from engines.harmonizer.vocab import BAR, NC, token_id, token_name
from tests.test_leadsheet_data import _pop909_song

T = token_id


def tokens(*names: str) -> np.ndarray:
    return np.array([NC if name == "N" else T(name) for name in names])


# ---------------------------------------------------------------- metrics


def test_reductions_group_qualities_by_third_and_seventh() -> None:
    majmin = lambda name: int(lm.labels(tokens(name), "majmin")[0])  # noqa: E731
    sevenths = lambda name: int(lm.labels(tokens(name), "sevenths")[0])  # noqa: E731
    assert majmin("C:maj7") == majmin("C:maj") == majmin("C:7") == majmin("C:aug") == majmin("C:7(#9)")
    assert majmin("E:hdim7") == majmin("E:min") == majmin("E:dim7") != majmin("E:maj")
    assert majmin("C:sus4") == majmin("C:5") != majmin("C:maj")
    assert majmin("C:maj") != majmin("G:maj")
    assert sevenths("G:9") == sevenths("G:7") == sevenths("G:13") != sevenths("G:maj7")
    assert sevenths("C:maj9") == sevenths("C:maj7") != sevenths("C:maj") == sevenths("C:maj6")
    assert sevenths("B:hdim7") not in (sevenths("B:min7"), sevenths("B:dim7"), sevenths("B:dim"))
    assert sevenths("D:sus2") == sevenths("D:sus4") and lm.labels(tokens("N"), "sevenths")[0] == -1


def test_agreement_skips_beats_without_a_human_chord() -> None:
    human = tokens("C:maj", "C:maj", "N", "G:maj", "G:maj")
    system = tokens("C:maj7", "A:min", "C:maj", "G:7", "N")
    assert lm.agreement(system, human, "majmin") == pytest.approx(0.5)  # C:maj7 and G:7 of four
    assert lm.agreement(system, human, "sevenths") == 0.0
    assert lm.agreement(human, human, "sevenths") == 1.0
    assert np.isnan(lm.agreement(system, tokens("N", "N", "N", "N", "N"), "majmin"))


def test_changes_per_bar_skip_no_chord_and_count_the_span_bars() -> None:
    chords = tokens("C:maj", "C:maj", "G:maj", "G:maj", "N", "G:maj", "C:maj", "C:maj")
    bars = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    everywhere = np.ones(8, dtype=bool)
    assert lm.changes_per_bar(chords, bars, everywhere) == 1.0  # C -> G -> C over two bars
    assert lm.changes_per_bar(chords, bars, np.arange(8) < 4) == 1.0  # one change in bar 1
    assert lm.changes_per_bar(tokens(*["A:min"] * 8), bars, everywhere) == 0.0


def test_chord_tone_ratio_is_a_share_of_melody_duration() -> None:
    melody = np.array([60, 60, 62, 64, -1, 65])
    chords = tokens("C:maj", "C:maj", "C:maj", "C:maj", "C:maj", "N")
    counted = np.ones(6, dtype=bool)
    assert lm.chord_tone_ratio(chords, melody, counted) == pytest.approx(3 / 5)  # D and F (no chord) miss
    assert lm.chord_tone_ratio(chords, melody, np.arange(6) >= 2) == pytest.approx(1 / 3)
    assert np.isnan(lm.chord_tone_ratio(chords, np.full(6, -1), counted))


def test_tonic_ending_only_for_melodies_ending_on_the_tonic() -> None:
    assert lm.ends_on_tonic(T("C:maj"), 72, 0, "major") == 1.0
    assert lm.ends_on_tonic(T("C:maj7"), 72, 0, "major") == 1.0
    assert lm.ends_on_tonic(T("G:7"), 72, 0, "major") == 0.0
    assert lm.ends_on_tonic(T("C:min"), 72, 0, "major") == 0.0
    assert np.isnan(lm.ends_on_tonic(T("C:maj"), 67, 0, "major"))
    assert lm.ends_on_tonic(T("A:min"), 69, 9, "minor") == 1.0 and lm.ends_on_tonic(T("A:maj"), 69, 9, "minor") == 0


@pytest.mark.parametrize(("found", "annotated", "relation"), [
    (0, 0, "exact"),  # key codes: tonic pitch class, +12 for minor
    (7, 0, "fifth"),
    (12 + 5, 12 + 0, "fifth"),
    (12 + 9, 0, "relative"),
    (0, 12 + 9, "relative"),
    (12 + 0, 0, "parallel"),
    (2, 0, "other"),
    (12 + 4, 0, "other"),
])
def test_key_relations(found: int, annotated: int, relation: str) -> None:
    assert lm.key_relation(found, annotated) == relation


def test_key_shares_count_beats_with_an_annotated_key() -> None:
    shares = lm.key_shares(np.array([0, 0, 7, 21, 5]), np.array([0, 0, 0, 0, -1]))
    assert shares == {"exact": 0.5, "fifth": 0.25, "relative": 0.25, "parallel": 0.0, "other": 0.0}
    assert np.isnan(lm.key_shares(np.array([0]), np.array([-1]))["exact"])


@pytest.mark.parametrize("seed", range(4))
def test_window_scores_match_the_chorale_evaluation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    row = np.repeat(rng.choice(tokens("C:maj", "F:maj", "G:7", "A:min", "B:hdim7", "N"), 20), 4)
    row[::9] = BAR
    pitch = np.where(row == BAR, -1, rng.integers(55, 80, len(row))).astype(np.int16)
    pitch[rng.random(len(row)) < 0.15] = -1  # rests
    onset = (rng.random(len(row)) < 0.7).astype(np.uint8)
    ours = lm.window_scores(row, pitch, lm.window_melody(pitch, onset, row))
    theirs = score_window(row, np.where(row == BAR, BAR, 0), pitch, onset, 1.0)
    for name in ("PCS", "CTnCTR", "CHE", "CC"):
        assert ours[name] == pytest.approx(theirs[name]), name


# ---------------------------------------------------------------- songs and systems


def _sheet(piece_id: str, style: str, signature: tuple[int, int], beat: int, notes: list[int],
           chords: list[tuple[int, str]], tonic: int = 0, mode: str = "major", per_bar: int | None = None):
    """A lead sheet in C major / A minor (shift 0): one note per beat (-1 rest), Harte chords at 16ths."""
    steps = len(notes) * beat
    per_bar = per_bar or signature[0] // (3 if signature[1] == 8 else 1)
    mapper = SymbolMapper()
    chord, bass, chord_onset = corpus.paint_chords([ChordEvent(s, *harte_chord(c, mapper)) for s, c in chords], steps)
    melody = np.repeat(np.array(notes, dtype=np.int16), beat)
    onset = np.zeros(steps, np.uint8)
    onset[::beat] = np.array(notes) >= 0
    bar_start, beat_start = np.zeros(steps, np.uint8), np.zeros(steps, np.uint8)
    bar_start[:: beat * per_bar], beat_start[::beat] = 1, 1
    key = np.full(steps, tonic + 12 * (mode == "minor"), np.int8)
    return corpus.LeadSheet(piece_id, piece_id.split("/")[0], corpus.STYLES.index(style), melody, onset, chord,
                            bass, chord_onset, bar_start, beat_start, key, signature, 0, mode, tonic)


def _arrays(sheets, shift: int = 0) -> dict[str, np.ndarray]:
    arrays = corpus.sheets_to_arrays(sheets, dict.fromkeys((s.piece_id for s in sheets), "test"))
    arrays["shift"][:] = shift
    return arrays


C_MAJOR = [60, 64, 67, 72, 65, 69, 72, 77, 67, 71, 74, 79, 72, 67, 64, 60]


def test_songs_come_back_in_their_own_key_on_metric_beats() -> None:
    six_eight = _sheet("openewld/a/b.mxl", "folk", (6, 8), 6, [60, 64, 67, 65], [(0, "C:maj"), (9, "G:7")])
    # stored as if the song were in D major: cached pitches and chords are key-normalized
    (song,) = le.songs_from_arrays(_arrays([six_eight], shift=-2))
    assert song.beats == 4 and song.start.tolist() == [0, 6, 12, 18]  # dotted quarters
    assert song.bar_start.tolist() == [1, 0, 1, 0]
    assert [token_name(int(t)) for t in song.human] == ["D:maj", "D:maj", "A:7", "A:7"]  # at each beat's 1st 16th
    assert song.pitches[0, 0] == 62 and song.melody[0] == 62
    assert song.keys.tolist() == [2] * 4 and song.style == "folk"


def test_baselines_tonic_and_best_triad() -> None:
    notes = [60, 64, 67, 72, 65, 69, 72, 77, 67, 71, 74, 77, 72, 72, 72, 72, -1, -1, -1, -1]
    chords = [(0, "C:maj"), (16, "F:maj"), (32, "G:7"), (48, "C:maj")]
    sheet = _sheet("openewld/a/b.mxl", "pop", (4, 4), 4, notes, chords)
    (song,) = le.songs_from_arrays(_arrays([sheet]))
    assert set(le.found_keys(song).tolist()) == {0}  # C major throughout
    made = le.baselines([song])
    assert list(made) == ["human", "rule", "tonic", "best-triad"]
    assert set(made["tonic"].chords[0].tolist()) == {T("C:maj")}
    best = [token_name(int(t)) for t in made["best-triad"].chords[0][::4]]
    # G B D F: V and vii both hold three notes, V first; the silent last bar holds the C before it
    assert best == ["C:maj", "F:maj", "G:maj", "C:maj", "C:maj"]
    assert np.array_equal(made["human"].chords[0], song.human)
    report = le.evaluate_songs([song], made)
    assert report["systems"]["human"]["groups"]["all"]["majmin"] == 1.0
    assert report["systems"]["best-triad"]["groups"]["pop"]["majmin"] == 1.0
    assert report["systems"]["best-triad"]["groups"]["pop"]["sevenths"] == pytest.approx(0.8)  # G under G7
    assert report["systems"]["tonic"]["groups"]["all"]["changes_ratio"] == 0.0
    assert report["key_detection"]["all"]["exact"] == 1.0


def _direct(model: HarmonizerModel, pitches: np.ndarray, bars: np.ndarray, signature: tuple[int, int]):
    return harmonize(model, pitches, bars, signature, style=model.styles[0], strategy=model.strategy,
                     rng=np.random.default_rng(5), temperature=model.temperature, top_p=model.top_p,
                     rhythm=model.rhythm).chords


def test_adapter_reads_the_chord_of_each_metric_beat() -> None:
    model = HarmonizerModel.named("harmonizer_chorale")
    assert model.beats == "quarter"
    sheet = _sheet("openewld/a/b.mxl", "folk", (6, 8), 6, C_MAJOR[:8], [(0, "C:maj")])
    (song,) = le.songs_from_arrays(_arrays([sheet]))
    chords, calls = le.harmonize_song(model, song, np.random.default_rng(5))
    assert len(chords) == song.beats == 8 and calls > 0
    # a quarter-note model: 12 quarters, the metre as `scorebridge harmonize` gives it (3/4)
    direct = _direct(model, song.melody.reshape(-1, 4), song.bar16.reshape(-1, 4).max(1), (3, 4))
    assert np.array_equal(chords, direct[[0, 1, 3, 4, 6, 7, 9, 10]])  # beats at 16ths 0, 6, 12, ...
    # a lead-sheet model steps on the metric beats themselves, in 6/8
    metric = dataclasses.replace(model, card={**model.card, "grid": {**model.card["grid"], "beats": "metric"}})
    chords, _ = le.harmonize_song(metric, song, np.random.default_rng(5))
    assert np.array_equal(chords, _direct(metric, song.pitches, song.bar_start, (6, 8)))


def test_decoding_in_worker_processes_gives_the_same_chords() -> None:
    sheets = [_sheet(f"pop909/00{n}", "pop", (4, 4), 4, C_MAJOR[n:] + C_MAJOR[:n], [(0, "C:maj")]) for n in range(3)]
    songs = le.songs_from_arrays(_arrays(sheets))
    spec = le.ModelSpec("harmonizer", str(HarmonizerModel.named("harmonizer").path))
    here = le.decode_models([spec], songs, seed=1, workers=1)["harmonizer"]  # in this process
    apart = le.decode_models([spec], songs, seed=1, workers=2)["harmonizer"]  # the batch layer's process pool
    assert len(here.chords) == 3 and here.calls == apart.calls
    assert all(np.array_equal(a, b) for a, b in zip(here.chords, apart.chords))


# ---------------------------------------------------------------- held-out songs and the command


def _lists(folder: Path, split: str, ids: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for dataset in corpus.SETS:
        (folder / f"{dataset}_{split}.txt").write_text("".join(f"{i}\n" for i in ids.get(dataset, [])))
    return folder


def test_held_out_songs_are_parsed_once_and_only_listed_ones(tmp_path: Path) -> None:
    root = tmp_path / "datasets" / "pop909" / "POP909"
    for name in ("001", "002", "003"):
        _pop909_song(root, name)
    splits = _lists(tmp_path / "splits", "test", {"pop909": ["pop909/003", "pop909/001"]})
    cache, messages = tmp_path / "cache", []
    arrays = corpus.load_eval_songs("test", cache, tmp_path / "datasets", messages.append, splits_dir=splits)
    assert arrays["piece_id"].tolist() == ["pop909/003", "pop909/001"]
    assert (cache / "leadsheets_test_q16_v1.npz").is_file() and any("parsing test" in m for m in messages)
    again = corpus.load_eval_songs("test", cache, tmp_path / "nowhere", splits_dir=splits)  # from the cache
    assert again["piece_id"].tolist() == ["pop909/003", "pop909/001"]
    _lists(splits, "test", {"pop909": ["pop909/002"]})  # the lists changed: parse again
    with pytest.raises(FileNotFoundError, match="nowhere"):
        corpus.load_eval_songs("test", cache, tmp_path / "nowhere", splits_dir=splits)
    with pytest.raises(ValueError, match="split"):
        corpus.load_eval_songs("train", cache, splits_dir=splits)


def test_full_training_cache_gives_the_test_songs_only(tmp_path: Path) -> None:
    sheets = [_sheet(f"pop909/00{n}", "pop", (4, 4), 4, C_MAJOR, [(0, "C:maj")]) for n in range(1, 4)]
    arrays = corpus.sheets_to_arrays(sheets, {"pop909/001": "train", "pop909/002": "test", "pop909/003": "val"})
    np.savez_compressed(tmp_path / corpus.CACHE_FILE, **arrays)
    splits = _lists(tmp_path / "splits", "test", {"pop909": ["pop909/002"]})
    test = corpus.load_eval_songs("test", tmp_path, tmp_path / "nowhere", splits_dir=splits, fields=le.EVAL_FIELDS)
    assert test["piece_id"].tolist() == ["pop909/002"] and "texture" not in test
    assert test["offsets"].tolist() == [0, 64] and len(test["melody_pitch"]) == 64


@pytest.fixture
def tiny_cache(tmp_path: Path) -> Path:
    """The test split's cache holding three synthetic songs under ids from the committed lists."""
    openewld, pop909 = corpus.split_ids("openewld", "test"), corpus.split_ids("pop909", "test")
    sheets = [
        _sheet(openewld[0], "jazz", (4, 4), 4, C_MAJOR, [(0, "C:maj7"), (16, "D:min7"), (32, "G:7"), (48, "C:maj7")]),
        _sheet(openewld[1], "folk", (3, 4), 4, C_MAJOR[:12], [(0, "C:maj"), (24, "G:maj"), (36, "C:maj")]),
        _sheet(pop909[0], "pop", (4, 4), 4, C_MAJOR, [(0, "A:min"), (16, "F:maj"), (32, "G:maj"), (48, "C:maj")]),
    ]
    arrays = _arrays(sheets)
    arrays["requested"] = np.array(openewld + pop909)
    arrays["skipped"] = np.array([], dtype=str)
    np.savez_compressed(tmp_path / "leadsheets_test_q16_v1.npz", **arrays)
    return tmp_path


def test_eval_harmony_on_lead_sheets(tiny_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, table = tiny_cache / "report.json", tiny_cache / "report.md"
    code = main(["eval", "harmony", "--models", "harmonizer", "--cache", str(tiny_cache), "--jobs", "1",
                 "--out", str(out), "--markdown", str(table), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    assert list(report["systems"]) == ["human", "rule", "tonic", "best-triad", "harmonizer"]
    assert list(report["groups"]) == ["all", "openewld", "pop909", "pop", "jazz", "folk"]
    assert report["groups"]["all"]["songs"] == 3 and report["split"] == "test"
    human, model = report["systems"]["human"]["groups"], report["systems"]["harmonizer"]
    assert human["all"]["majmin"] == 1.0 and human["all"]["changes_ratio"] == 1.0
    assert human["jazz"]["sevenths"] == 1.0 and human["all"]["tonic_ending"] == 1.0
    assert model["mean_calls"] > 0 and 0 <= model["groups"]["all"]["majmin"] <= 1
    assert sum(report["key_detection"]["all"].values()) == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "| harmonizer |" in printed and "jazz (1)" in printed and table.read_text().strip() == printed.strip()

    assert main(["eval", "harmony", "--models", "harmonizer", "--cache", str(tiny_cache), "--jobs", "1",
                 "--styles", "folk", "--no-rule", "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert list(report["groups"]) == ["all", "openewld", "folk"] and "rule" not in report["systems"]


@pytest.mark.parametrize(("words", "message"), [
    (["--datasets", "{tmp}/nowhere"], "nowhere"),
    (["--styles", "polka"], "unknown style polka"),
    (["--pieces", "3"], "--pieces: only with --set chorales"),
    (["--set", "chorales", "--songs", "3"], "--songs: only with --set leadsheets"),
    (["--songs", "0"], "--songs must be at least 1"),
    (["--out", "{tmp}/no/such/folder/r.json", "--songs", "1"], "does not exist"),
])
def test_eval_harmony_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], words,
                                                 message) -> None:
    words = [w.replace("{tmp}", str(tmp_path)) for w in words]
    cache = tmp_path / "empty-cache"
    assert main(["eval", "harmony", "--models", "harmonizer", "--cache", str(cache), "--quiet", *words]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
