"""`scorebridge eval continuation`: the measures on hand-made notes, prompt selection, the
held-out song cache, and the command on a tiny cache of synthetic songs (real ONNX Runtime
sessions of the shipped model; no data sets needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from engines.continuation import evaluation as ev
from engines.continuation.corpus import save_arrays
from engines.continuation.pieces import LOWER, UPPER
from engines.continuation.tokens import LEFT, RIGHT, NoteEvent

C_MAJOR_TUNE = (72, 74, 76, 77, 79, 77, 76, 74)  # eighths, one bar
ALBERTI = (48, 55, 52, 55, 48, 55, 52, 55)


def song_rows(bars: int, shift: int = 0, tune=C_MAJOR_TUNE) -> np.ndarray:
    """(pitch, start, end, velocity, hand) in beats: a tune over an Alberti bass, in 4/4."""
    rows = []
    for bar in range(bars):
        for k in range(8):
            start = bar * 4 + k * 0.5
            rows.append((tune[k] + shift, start, start + 0.5, 80, UPPER))
            rows.append((ALBERTI[k] + shift, start, start + 0.5, 60, LOWER))
    return np.array(rows, dtype=np.float64)


def prompt(rows: np.ndarray | None = None, song_id: str = "pop909/001") -> ev.Prompt:
    made = ev.prompts_of(song_id, "4/4", song_rows(16) if rows is None else rows, 4, 4)
    assert len(made) == 1
    return made[0]


def test_prompts_take_bars_where_both_hands_play_and_keep_the_next_bars() -> None:
    rows = song_rows(16)
    rows = rows[~((rows[:, 4] == LOWER) & (rows[:, 1] < 12))]  # the left hand enters at bar 3
    p = prompt(rows)
    first = int(p.song_id.split("@")[1])
    assert first >= 3 and p.bars == 4 and p.bar_steps == 48 and p.key == (0, True)
    assert {n.hand for n in p.notes} == {RIGHT, LEFT} and max(n.end_steps for n in p.notes) == p.end_steps
    assert min(n.onset_steps for n in p.human) == 0 and max(n.onset_steps for n in p.human) < 4 * 48
    assert ev.prompts_of("pop909/002", "4/4", song_rows(5), 4, 4) == []  # too short for prompt + next bars
    assert len(ev.prompts_of("bach/x.mxl", "4/4", song_rows(40), 4, 4, count=6)) == 6


def test_the_repeat_baseline_matches_its_prompt_and_a_foreign_one_does_not() -> None:
    p = prompt()
    other = prompt(song_rows(16, tune=(72, 71, 69, 67, 72, 64, 65, 60)), "pop909/002")
    repeated = ev.repeat_last_bars(p, 4)
    assert len(repeated) == 4 * 16 and max(n.onset_steps for n in repeated) < 4 * 48
    figures = ev.measure(repeated, p, 4, other)
    assert figures["in_key"] == pytest.approx(1.0) and figures["rhythm"] == pytest.approx(1.0)
    assert figures["motif"] == pytest.approx(1.0) and figures["motif_random"] < 0.5
    assert figures["right_density"] == pytest.approx(1.0) and figures["left_pitch"] == 0.0
    assert figures["right_silent_bars"] == figures["left_silent_bars"] == 0.0


def test_out_of_key_notes_silent_hands_and_register_are_measured() -> None:
    p = prompt()
    chromatic = [NoteEvent(12 * k, RIGHT, 73 + (k % 2) * 2, 12, 80) for k in range(8)]  # C#, D#: out of C
    chromatic += [NoteEvent(0, LEFT, 36, 12, 60)]  # one low bass note, then nothing for three bars
    figures = ev.measure(chromatic, p, 4, p)
    assert figures["in_key"] == pytest.approx(1 / 9)  # only the bass C is in C major
    assert figures["left_silent_bars"] == 3.0 and figures["right_silent_bars"] == 2.0
    assert figures["left_pitch"] == 36 - 53.5  # the prompt's left-hand median: 48 52 55 55
    assert figures["rhythm"] == (1 / 8 + 0) / 2  # one of its 8 onset positions, then an empty bar
    summary = ev.summarize([figures, ev.measure(ev.repeat_last_bars(p, 4), p, 4, p)], [True, True])
    assert summary["in_key_min"] == pytest.approx(1 / 9) and summary["in_key_met"] == 0.5
    assert summary["left_pitch_met"] == 0.5 and summary["left_silent_bars"] == 3.0
    assert ev.in_key_share([NoteEvent(0, RIGHT, 68, 1, 80)], (9, False)) == 1.0  # G# is A minor's raised 7th


def write_split(folder: Path, monkeypatch: pytest.MonkeyPatch, songs: list[tuple[str, str, np.ndarray]]) -> Path:
    """A test list of ``songs`` (id, time signature, rows) and their eval cache; returns the cache."""
    splits, cache = folder / "splits", folder / "cache"
    splits.mkdir()
    (splits / "twohands_test.txt").write_text("\n".join(song[0] for song in songs) + "\n")
    monkeypatch.setattr(ev, "SPLITS_DIR", splits)
    save_arrays(cache / ev.EVAL_CACHE.format(split="test"), **ev._cache_rows(songs))
    return cache


@pytest.fixture
def tiny_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test list of three synthetic songs (two pop, one classical) and their eval cache."""
    return write_split(tmp_path, monkeypatch, [("pop909/001", "4/4", song_rows(12)),
                                               ("pop909/002", "4/4", song_rows(12, shift=-3)),
                                               ("bach/x.mxl", "4/4", song_rows(40, shift=2))])


def test_held_out_songs_come_from_the_cache_or_an_error_names_the_data(tiny_split: Path, tmp_path: Path) -> None:
    songs = ev.load_songs("test", None, tiny_split)
    assert [s[0] for s in songs] == ["pop909/001", "pop909/002", "bach/x.mxl"]
    assert np.array_equal(songs[1][2], song_rows(12, shift=-3))
    prompts = ev.held_out_prompts("test", None, cache=tiny_split)
    assert [p.source for p in prompts] == ["pop", "pop"] + ["classical"] * ev.CLASSICAL_PROMPTS
    assert len(ev.held_out_prompts("test", None, songs=1, cache=tiny_split)) == 1 + ev.CLASSICAL_PROMPTS
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ev.load_songs("test", tmp_path / "nowhere", tmp_path / "empty")


def test_eval_continuation_command(tiny_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = main(["eval", "continuation", "--cache", str(tiny_split), "--models", "continuation", "--seeds", "2",
                 "--jobs", "1", "--quiet", "--out", str(out), "--markdown", str(tmp_path / "table.md")])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"human", "repeat", "continuation"}
    model = report["rows"]["continuation"]
    assert model["all"]["continuations"] == 2 * (2 + ev.CLASSICAL_PROMPTS)
    assert model["pop"]["continuations"] == 4 and 0 <= model["all"]["in_key_met"] <= 1
    assert report["rows"]["repeat"]["all"]["rhythm"] == pytest.approx(1.0)
    assert model["all"]["right_notes_per_bar"] > 0 and model["all"]["left_notes_per_bar"] > 0
    table = capsys.readouterr().out
    assert "| continuation | classical |" in table and (tmp_path / "table.md").read_text() in table + "\n"


@pytest.mark.parametrize("words, message", [
    (["--seeds", "0"], "--seeds 0"), (["--models", "nope"], "not a shipped model"),
    (["--key-bias", "9"], "--key-bias 9"), (["--models", "missing.onnx"], "no such file"),
])
def test_eval_continuation_refuses_bad_options(words: list[str], message: str, tiny_split: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "continuation", "--cache", str(tiny_split), "--quiet", *words]) != 0
    assert message in capsys.readouterr().err
