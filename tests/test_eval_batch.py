"""The eval harnesses run their songs and prompts through the batch layer: one worker in this
process and two worker processes give the same tables, figure for figure (seeded draws per
song and prompt). tests/test_batch_ray.py runs the same commands on a Ray cluster."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cli.main import main
from tests.test_eval_continuation import song_rows, write_split
from tests.test_eval_leadsheets import tiny_cache  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def pop_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two synthetic pop songs, a prompt each (the classical ones would add six)."""
    return write_split(tmp_path, monkeypatch, [("pop909/001", "4/4", song_rows(12)),
                                               ("pop909/002", "4/4", song_rows(12, shift=-3))])


def harmony_words(cache: Path) -> list[str]:
    return ["eval", "harmony", "--models", "harmonizer", "--cache", str(cache), "--seed", "3"]


def continuation_words(cache: Path) -> list[str]:
    return ["eval", "continuation", "--cache", str(cache), "--models", "continuation", "--seeds", "2", "--bars", "1"]


def without_timing(report: dict) -> dict:
    """A report with its seconds (of work, of the run) and speed left out: all that may differ."""
    if isinstance(report, dict):
        return {k: without_timing(v) for k, v in report.items() if k not in ("seconds", "speed")}
    return report


def harmony_table(markdown: str) -> str:
    """The Markdown tables of ``eval harmony`` with the overall table's seconds column cut."""
    parts = markdown.split("\n\n")
    parts[1] = "\n".join(line.rsplit("|", 2)[0] for line in parts[1].splitlines())
    return "\n\n".join(parts)


def run_eval(words: list[str], out: Path, capsys: pytest.CaptureFixture[str], where: str) -> tuple[dict, str]:
    """One eval command in this process: its JSON report and the table it printed; its
    progress says the items ran ``where``."""
    capsys.readouterr()
    assert main([*words, "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert f" on {where}" in printed.err, printed.err
    return json.loads(out.read_text()), printed.out


def test_eval_harmony_tables_are_the_same_on_one_and_two_workers(tiny_cache: Path, tmp_path: Path,  # noqa: F811
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    here, here_table = run_eval([*harmony_words(tiny_cache), "--workers", "1"], tmp_path / "1.json", capsys,
                                "this process")
    pool, pool_table = run_eval([*harmony_words(tiny_cache), "--workers", "2"], tmp_path / "2.json", capsys,
                                "2 local workers")
    assert here["groups"]["all"]["songs"] == 3 and "harmonizer" in here["systems"]
    assert here["systems"]["harmonizer"]["mean_calls"] > 0
    assert without_timing(pool) == without_timing(here)
    assert "| harmonizer |" in here_table and harmony_table(pool_table) == harmony_table(here_table)


def test_eval_continuation_tables_are_the_same_on_one_and_two_workers(pop_split: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    here, here_table = run_eval([*continuation_words(pop_split), "--workers", "1"], tmp_path / "1.json", capsys,
                                "this process")
    pool, pool_table = run_eval([*continuation_words(pop_split), "--workers", "2"], tmp_path / "2.json", capsys,
                                "2 local workers")
    assert here["rows"]["continuation"]["all"]["continuations"] == 2 * 2
    assert without_timing(pool) == without_timing(here)
    table = here_table.splitlines()[:-1]  # the last line names the run's seconds
    assert "| continuation | pop |" in "\n".join(table) and pool_table.splitlines()[:-1] == table


def test_eval_workers_and_ray_address_are_checked(tiny_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    with pytest.raises(SystemExit) as stopped:  # argparse's own usage error
        main([*harmony_words(tiny_cache), "--workers", "0"])
    assert stopped.value.code == 2
    assert "not a number of workers" in capsys.readouterr().err
    assert main(["eval", "harmony", "--set", "chorales", "--workers", "2", "--quiet"]) == 1
    assert "--workers: only with --set leadsheets" in capsys.readouterr().err


def test_eval_on_a_ray_address_where_no_cluster_answers_is_one_clear_line(tiny_cache: Path, pop_split: Path,  # noqa: F811
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]' (CI installs it)")
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for words in (harmony_words(tiny_cache), continuation_words(pop_split)):
        assert main([*words, "--ray-address", f"127.0.0.1:{port}"]) == 1
        error = capsys.readouterr().err
        assert "no Ray cluster answers there" in error and "Traceback" not in error
