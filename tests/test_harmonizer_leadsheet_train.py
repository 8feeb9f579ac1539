"""Lead-sheet training windows and a 3-step training run on a tiny synthetic lead-sheet cache
written by the builder's own writer (no data sets needed)."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from engines.harmonizer import leadsheet_corpus as corpus  # noqa: E402
from engines.harmonizer.chord_symbols import ChordEvent, SymbolMapper, harte_chord  # noqa: E402
from engines.harmonizer.grid import GridConfig  # noqa: E402
from engines.harmonizer.vocab import PAD, token_name  # noqa: E402
from training.harmonizer import sources, train  # noqa: E402

TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--feedforward", "32", "--batch", "2",
        "--length", "32", "--warmup", "1"]
GRID = GridConfig("q4", True, "pc", 32)


def _sheet(piece_id: str, signature: tuple[int, int], bars: int, beat: int, chords: list[tuple[int, str]]):
    """A lead sheet of `bars` bars, beats every `beat` 16ths, a melody note per beat, chord symbols
    (16th, Harte label) painted by the builder."""
    bar = beat * (signature[0] // (3 if signature[1] == 8 else 1))
    steps = bars * bar
    mapper = SymbolMapper()
    events = [ChordEvent(step, *harte_chord(label, mapper)) for step, label in chords]
    chord, bass, onset = corpus.paint_chords(events, steps)
    melody = np.full(steps, -1, dtype=np.int16)
    melody_onset = np.zeros(steps, dtype=np.uint8)
    for start in range(0, steps, beat):
        melody[start: start + beat] = 60 + (start // beat) % 5
        melody_onset[start] = 1
    bar_start, beat_start = np.zeros(steps, np.uint8), np.zeros(steps, np.uint8)
    bar_start[::bar], beat_start[::beat] = 1, 1
    return corpus.LeadSheet(piece_id, piece_id.split("/")[0], corpus.STYLES.index("folk"), melody,
                            melody_onset, chord, bass, onset, bar_start, beat_start,
                            np.zeros(steps, np.int8), signature, 0, "major", 0)


def _labels(windows, row: int) -> list[str]:
    return [token_name(int(t)) for t in windows.harmony[row] if t != PAD]


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, Path]:
    sheets = [
        # 4/4: C held a bar; Cmaj7 then C on beat 3 (a subset chord with the same bass); G7 from
        # the "and" of beat 2 (sounds from beat 3 on the beat grid); C; then F held two bars
        _sheet("openewld/a/song.mxl", (4, 4), 6, 4, [
            (0, "C:maj"), (16, "C:maj7"), (24, "C:maj"), (38, "G:7"), (48, "C:maj"), (64, "F:maj")]),
        # 6/8: two dotted-quarter beats a bar, a change on the second beat
        _sheet("openewld/b/song.mxl", (6, 8), 3, 6, [(0, "C:maj"), (6, "G:maj"), (12, "A:min")]),
        _sheet("pop909/001", (4, 4), 4, 4, [(0, "A:min"), (32, "D:min")]),
    ]
    arrays = corpus.sheets_to_arrays(sheets, dict.fromkeys((s.piece_id for s in sheets), "train"))
    folder = tmp_path / "cache"
    folder.mkdir()
    np.savez_compressed(folder / corpus.CACHE_FILE, **arrays)
    splits = tmp_path / "splits"
    splits.mkdir()
    lists = {"openewld_train": ["openewld/a/song.mxl"], "openewld_val": ["openewld/b/song.mxl"],
             "pop909_train": ["pop909/001"], "pop909_val": ["pop909/001"]}
    for name, ids in lists.items():
        (splits / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return folder, splits


def test_beat_labels_come_from_the_human_chord_on_metric_beats(cache) -> None:
    folder, splits = cache
    arrays = corpus.load(folder)
    windows = sources.leadsheet_windows(arrays, GRID, "train", ("openewld",), splits_dir=splits)
    assert windows.piece_ids == ["openewld/a/song.mxl"]
    bar = "<bar>"
    assert _labels(windows, 0) == [
        bar, "C:maj", "C:maj", "C:maj", "C:maj",
        bar, "C:maj7", "C:maj7", "C:maj", "C:maj",
        bar, "C:maj", "C:maj", "G:7", "G:7",
        bar, "C:maj", "C:maj", "C:maj", "C:maj",
        bar, "F:maj", "F:maj", "F:maj", "F:maj",
        bar, "F:maj", "F:maj", "F:maj", "F:maj",
    ]
    six_eight = sources.leadsheet_windows(arrays, GRID, "val", ("openewld",), splits_dir=splits)
    assert _labels(six_eight, 0) == [bar, "C:maj", "G:maj", bar, "A:min", "A:min", bar, "A:min", "A:min"]
    # a beat's melody is every pitch of its dotted quarter, and the window's condition says 6/8
    assert six_eight.condition[0][5] == 1 and six_eight.condition[0][15] == 1
    assert (six_eight.melody[0][1, :12] == np.eye(12, dtype=np.uint8)[0]).all()


def test_test_lists_are_never_read(cache) -> None:
    folder, splits = cache
    with pytest.raises(ValueError, match="not 'test'"):
        sources.leadsheet_windows(corpus.load(folder), GRID, "test", splits_dir=splits)


def test_weights_set_the_share_of_each_source(cache) -> None:
    folder, splits = cache
    data = sources.load_training_data("leadsheets", GRID, folder, "openewld=3,pop909=1", splits)
    drawn = data.train_source[data.sample(np.random.default_rng(0), 4000)]
    assert abs((drawn == 0).mean() - 0.75) < 0.03
    assert data.styles == corpus.STYLES and len(data.styles) == 8
    with pytest.raises(ValueError, match="classical"):
        sources.parse_weights("classical=1", data.sources)


def test_three_steps_on_lead_sheets_then_resume_guard(cache, tmp_path: Path, capsys) -> None:
    folder, splits = cache
    out = tmp_path / "run"
    def command(data: str = "leadsheets", cache_folder: Path = folder, run: Path = out) -> list[str]:
        return ["--curriculum", "ff", "--steps", "3", "--data", data, "--cache", str(cache_folder),
                "--splits", str(splits), "--out", str(run), "--eval-every", "3", *TINY]

    common = command()
    assert train.main(common) == 0
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "val", "done"]
    assert events[0]["train_windows_by_source"] == {"openewld": 1, "pop909": 1}
    per_source = [events[1]["val_loss_full/openewld"], events[1]["val_loss_full/pop909"]]
    assert min(per_source) <= events[1]["val_loss_full"] <= max(per_source)  # pooled over the sources
    import torch

    checkpoint = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 3 and checkpoint["model_config"]["num_styles"] == 8
    assert checkpoint["data"]["data"] == "leadsheets"
    capsys.readouterr()
    # the same folder with other data is refused rather than silently mixed
    assert train.main(command(data="union")) == 2
    assert "on leadsheets" in capsys.readouterr().err
    # a missing cache is a clear error, not a traceback
    assert train.main(command(cache_folder=tmp_path / "none", run=tmp_path / "new")) == 2
    assert "leadsheets build" in capsys.readouterr().err


def test_lead_sheet_checkpoint_exports_with_its_styles(cache, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from training.harmonizer.export import export_checkpoint

    folder, splits = cache
    out = tmp_path / "run"
    assert train.main(["--curriculum", "ff", "--steps", "2", "--data", "leadsheets", "--cache", str(folder),
                       "--splits", str(splits), "--out", str(out), "--eval-every", "2", *TINY]) == 0
    card = export_checkpoint(out / "last.pt", "tiny", tmp_path / "models", folder, splits_dir=splits)
    assert card["styles"] == list(corpus.STYLES)
    assert "human chord symbol" in card["labels"] and card["data"]["data"] == "leadsheets"
    assert card["parity"]["max_abs_difference_ort_vs_torch"] < 1e-4


def test_warm_start_from_a_three_style_checkpoint(cache, tmp_path: Path) -> None:
    import torch

    from training.harmonizer import lockstep
    from training.harmonizer.model import Harmonizer, ModelConfig

    folder, splits = cache
    torch.manual_seed(1)
    old = Harmonizer(ModelConfig(roll_dim=13, length=32, d_model=16, heads=2, layers=1, feedforward=32))
    torch.save({"model": old.state_dict()}, tmp_path / "classical.pt")
    root = tmp_path / "runs"
    assert lockstep.main(["--curricula", "ff", "--steps", "1", "--data", "leadsheets", "--cache", str(folder),
                          "--splits", str(splits), "--root", str(root), "--init", str(tmp_path / "classical.pt"),
                          "--lr", "0", *TINY]) == 0
    styles = torch.load(root / "ff" / "last.pt", map_location="cpu", weights_only=False)["model"]["style_in.weight"]
    assert styles.shape[0] == 8
    assert torch.equal(styles[:3], old.state_dict()["style_in.weight"])
