"""Tokenizing the two-hand corpus (training/continuation/twohands_tokens.py) into a training cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.continuation import tokens as tk
from engines.continuation.corpus import CORPORA, STYLES, load_corpus, load_split_ids, save_arrays, tokenize_notes
from training.continuation import twohands, twohands_tokens
from training.continuation.twohands_tokens import bar_steps


def _row(pitch, start, end, hand, velocity=80):
    return (pitch, start, end, velocity, hand)


def _songs() -> list[tuple[str, str, list[tuple]]]:
    """(id from the committed lists, time signature, rows) for two train songs, one val, one test."""
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    waltz = [_row(scale[i % 8] + 12, i * 1.0, i * 1.0 + 1, twohands.UPPER) for i in range(12)]
    waltz += [_row(48, bar * 3.0, bar * 3.0 + 3, twohands.LOWER) for bar in range(4)]
    march = [_row(scale[i % 8] + 12, i * 0.5, i * 0.5 + 0.5, twohands.UPPER) for i in range(16)]
    march += [_row(43 + (i % 2) * 7, i * 1.0, i * 1.0 + 1, twohands.LOWER) for i in range(8)]
    march += [
        _row(84, 0.375, 0.5, twohands.UPPER),  # a 32nd after a dotted 16th: moves to the 1/12 grid
        _row(43, 0.0, 0.5, twohands.LOWER),  # same hand, pitch and onset as the bass: a duplicate
        _row(110, 1.0, 2.0, twohands.UPPER),  # above the piano: dropped
    ]
    ids = [load_split_ids(s, "twohands")[i] for s, i in (("train", 0), ("train", 1), ("val", 0), ("test", 0))]
    return [(ids[0], "3/4", waltz), (ids[1], "4/4", march), (ids[2], "4/4", march[:16]), (ids[3], "6/8", waltz)]


def _notes_cache(folder: Path) -> list[tuple[str, str, list[tuple]]]:
    songs = _songs()
    rows = np.array([(*row, number) for number, (_, _, notes) in enumerate(songs) for row in notes], dtype=np.float64)
    save_arrays(
        folder / twohands.CACHE_FILE,
        pitch=rows[:, 0].astype(np.int16), start=rows[:, 1], end=rows[:, 2], velocity=rows[:, 3].astype(np.int16),
        hand=rows[:, 4].astype(np.int8), song=rows[:, 5].astype(np.int32), song_ids=np.array([s[0] for s in songs]),
        sources=np.array(["pop909"] * len(songs)), keys=np.array(["C:maj"] * len(songs)),
        time_signatures=np.array([s[1] for s in songs]), splits=np.array(["train", "train", "val", "test"]),
    )
    return songs


def test_bar_lengths_follow_the_metre():
    assert [bar_steps(t) for t in ("4/4", "3/4", "6/8", "2/2", "2/4")] == [48, 36, 36, 48, 24]
    for bad in ("4", "x/4", "3/0", "1/64"):
        with pytest.raises(ValueError, match="time signature|grid steps"):
            bar_steps(bad)


def test_tokenized_cache_loads_with_the_committed_split_and_labels(tmp_path):
    songs = _notes_cache(tmp_path)
    record = twohands_tokens.tokenize_corpus(tmp_path)
    assert (tmp_path / CORPORA["twohands"][0]).is_file() and not (tmp_path / CORPORA["music21"][0]).exists()
    data = load_corpus(tmp_path, "twohands")
    assert data.piece_ids == [s[0] for s in songs] and data.splits == ["train", "train", "val", "test"]
    assert (data.styles == STYLES.index("piano")).all() and data.valence_lead == 0
    assert record["train"]["pieces"] == 2 and record["val"]["pieces"] == 1 and record["test"]["pieces"] == 1
    assert record["train"]["tokens"] + record["val"]["tokens"] + record["test"]["tokens"] == len(data.tokens)
    notes = sum(len(s[2]) for s in songs)
    assert record["notes"] == notes and record["dropped_out_of_range"] == 1
    assert record["canonicalize"] == {"shortened": 0, "duplicates": 1}
    assert record["canonicalize_changed"] == round(1 / notes, 4)
    assert record["onsets_moved_by_grid"] == round(1 / notes, 4)

    waltz = data.tokens[data.offsets[0]:data.offsets[1]]
    decoded, bars, _ = tk.decode(waltz)
    assert bars == [0, 36, 72, 108] and waltz[0] == tk.SOS and waltz[-1] == tk.EOS
    assert sorted((n.onset_steps, n.hand, n.pitch) for n in decoded if n.hand == tk.LEFT) == [
        (b * 36, tk.LEFT, 48) for b in range(4)]
    march, march_bars, _ = tk.decode(data.tokens[data.offsets[1]:data.offsets[2]])
    assert march_bars == [0, 48]
    assert (4, tk.RIGHT, 84) in {(n.onset_steps, n.hand, n.pitch) for n in march}  # beat 0.375 -> 1/3
    assert sum(n.pitch == 43 and n.onset_steps == 0 for n in march) == 1 and max(n.pitch for n in march) < 110
    # the labels are the music21 corpus's: valence/arousal of the canonical notes, per token
    expected = tokenize_notes(decoded, [0, 36, 72, 108], "waltz")
    assert np.array_equal(expected[0].astype(np.int64), waltz)
    assert np.allclose(data.va[data.offsets[0]:data.offsets[1]], expected[1].astype(np.float32))
    assert data.va.shape == (len(data.tokens), 2) and data.va[:, 0].mean() > 0  # C major tunes: positive valence


def test_missing_notes_cache_is_a_clear_error(tmp_path, capsys):
    assert twohands_tokens.main(["--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "twohands_v1.npz is missing" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="twohands_tokens"):
        load_corpus(tmp_path, "twohands")


@pytest.mark.slow
def test_two_training_steps_on_the_twohands_cache(tmp_path, capsys):
    pytest.importorskip("torch")
    from training.continuation import train

    _notes_cache(tmp_path)
    twohands_tokens.tokenize_corpus(tmp_path)
    run = tmp_path / "run"
    assert train.main(["--corpus", "twohands", "--steps", "2", "--batch", "2", "--length", "32", "--eval-every",
                       "2", "--d-model", "16", "--layers", "1", "--cache", str(tmp_path), "--out", str(run)]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["args"]["corpus"] == "twohands" and log[-1] == {"event": "done", "step": 2,
                                                                  "best_val": log[-1]["best_val"]}
    assert np.isfinite(log[-1]["best_val"]) and (run / "best.pt").is_file()
    # the default corpus is still music21's, which this folder lacks
    assert train.main(["--steps", "2", "--cache", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "corpus_v1.npz is missing" in capsys.readouterr().err
