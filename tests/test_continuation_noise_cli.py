"""``scorebridge eval noise-injection`` on the shipped ONNX models, on a tiny setting: contexts
from a MIDI file, short noise spans; the CSV, the PNG and the causal baseline are checked."""

from __future__ import annotations

import csv

from cli.main import main
from tests.test_continuation_cli import write_phrase


def test_probe_writes_csv_and_png_for_both_models(tmp_path, capsys) -> None:
    source = tmp_path / "phrase.mid"
    write_phrase(source, bars=8)
    out = tmp_path / "probe"
    code = main(
        [
            "eval",
            "noise-injection",
            "-o",
            str(out),
            "--midi",
            str(source),
            "--context",
            "48",
            "--start",
            "12",
            "--lengths",
            "4,8",
            "--contexts",
            "3",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with open(out / "noise_probe.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["noise_tokens"]) for r in rows] == [
        ("smart", "4"),
        ("smart", "8"),
        ("plain", "4"),
        ("plain", "8"),
    ]
    for row in rows:
        assert row["contexts"] == "3"
        assert abs(float(row["baseline"])) < 1e-6  # causal: nothing changes before the noise
        assert float(row["peak"]) > 0  # random tokens are surprising
        assert 12 < int(row["peak_end"]) <= 48
    assert (out / "noise_probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_bad_settings_are_clear_errors(tmp_path, capsys) -> None:
    source = tmp_path / "phrase.mid"
    write_phrase(source)
    base = ["eval", "noise-injection", "-o", str(tmp_path / "x"), "--midi", str(source)]
    assert main([*base, "--context", "32", "--start", "30", "--lengths", "8"]) == 1
    assert "must stay below --context 32" in capsys.readouterr().err
    assert main([*base, "--lengths", "a,b"]) == 1
    assert "--lengths 'a,b'" in capsys.readouterr().err
    assert main([*base, "--context", "200"]) == 1  # a two-bar phrase has no 200-token window
    assert "no piece has 200 tokens" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
