"""The user cache folder and the evaluation sets built on first use, then reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.paths import cache_dir
from engines.continuation import corpus
from engines.harmonizer import dataset, folk


def test_cache_folder_follows_xdg_and_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SCOREBRIDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("harmonizer") == tmp_path / "xdg" / "scorebridge" / "harmonizer"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "scorebridge"
    monkeypatch.setenv("SCOREBRIDGE_CACHE", str(tmp_path / "mine"))
    assert cache_dir("continuation") == tmp_path / "mine" / "continuation"


def _fake_pieces(ids: list[str]) -> dict[str, np.ndarray]:
    """Raw harmonizer arrays of pieces whose length and values encode their position in the list."""
    arrays = {key: [] for key in ("melody_pitch", "chord")}
    lengths = []
    for piece_id in ids:
        length = 4 + int(piece_id.removeprefix("p"))
        lengths.append(length)
        arrays["melody_pitch"].append(np.full(length, 60 + length, np.int16))
        arrays["chord"].append(np.full(length, length, np.int16))
    return {
        "piece_id": np.array(ids), "style": np.zeros(len(ids), np.int64),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "time_signature": np.tile([4, 4], (len(ids), 1)), "shift": np.zeros(len(ids), np.int64),
        "mode": np.array(["major"] * len(ids)), "split": np.array(["test"] * len(ids)),
        **{key: np.concatenate(value) for key, value in arrays.items()},
    }


def test_split_pieces_are_parsed_once_and_the_cache_grows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = [f"p{i}" for i in range(6)]
    parsed: list[tuple[int, int | None]] = []

    def parse(split: str, count: int | None = None, first: int = 0, progress=None) -> dict[str, np.ndarray]:
        parsed.append((first, count))
        if progress is not None:
            progress(f"parsing {count - first} pieces")
        return _fake_pieces(ids[first:count])

    monkeypatch.setattr(dataset, "load_split_ids", lambda split: ids)
    monkeypatch.setattr(dataset, "parse_split", parse)
    messages: list[str] = []
    three = dataset.load_split("test", 3, tmp_path, messages.append)
    assert parsed == [(0, 3)] and any("cached 3 test pieces" in m for m in messages)
    assert (tmp_path / "test_q16_v1.npz").is_file()
    again = dataset.load_split("test", 2, tmp_path)
    assert parsed == [(0, 3)], "a smaller request is served from the cache"
    assert list(again["piece_id"]) == ["p0", "p1"] and len(again["chord"]) == again["offsets"][-1] == 4 + 5
    five = dataset.load_split("test", 5, tmp_path)
    assert parsed == [(0, 3), (3, 5)], "only the missing pieces are parsed"
    assert list(five["piece_id"]) == ids[:5]
    assert np.array_equal(five["offsets"], _fake_pieces(ids[:5])["offsets"])
    assert np.array_equal(five["chord"][: three["offsets"][-1]], three["chord"])
    monkeypatch.setattr(dataset, "load_split_ids", lambda split: ["other", *ids])
    dataset.load_split("test", 1, tmp_path)
    assert parsed[-1] == (0, 1), "a cache of other split lists is rebuilt"


def test_folk_melodies_are_parsed_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []

    def parse(count: int, progress) -> dict[str, np.ndarray]:
        calls.append(count)
        return _fake_pieces([f"p{i}" for i in range(count)]) | {"split": np.array([folk.FOLK_SPLIT] * count)}

    monkeypatch.setattr(folk, "_parse", parse)
    assert len(folk.load_folk(4, tmp_path / "new")["piece_id"]) == 4
    assert len(folk.load_folk(2, tmp_path / "new")["piece_id"]) == 2
    assert len(folk.load_folk(4, tmp_path / "new")["piece_id"]) == 4
    assert calls == [4]


def test_continuation_split_is_tokenized_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ids = corpus.load_split_ids("test")[:2]
    calls: list[str] = []

    def tokenize(piece_id: str):
        calls.append(piece_id)
        tokens = np.arange(10 + len(calls), dtype=np.int16)
        return tokens, np.zeros((len(tokens), 2), np.float16), "piano", {}

    monkeypatch.setattr(corpus, "load_split_ids", lambda split: ids)
    monkeypatch.setattr(corpus, "tokenize_piece", tokenize)
    first = corpus.load_split_corpus("test", tmp_path)
    second = corpus.load_split_corpus("test", tmp_path)
    assert calls == ids and first.piece_ids == second.piece_ids == ids
    assert np.array_equal(first.tokens, second.tokens) and list(second.offsets) == [0, 11, 23]
    assert list(second.piece_indices("test")) == [0, 1]
