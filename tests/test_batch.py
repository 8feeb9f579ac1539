"""The batch layer on this machine's process pool, through the real commands in subprocesses:
a folder or manifest in, one output per item, a results manifest that resumes; a worker killed
with SIGKILL mid-item, a bad input and Ctrl-C each cost only what they must."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
import soundfile as sf

from cli.batch import RESULTS_NAME
from core.batch import Item, Results, manifest_rows, sweep_temporaries
from core.batch.results import DONE, Result
from core.children import TiedPopen
from core.errors import ConfigError
from tests.jackutil import ROOT

pytestmark = pytest.mark.slow

# The real command; Ctrl-C raises KeyboardInterrupt even where the test runner was started with
# SIGINT ignored (a background job), as it does in a terminal.
_MAIN = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from cli.main import main; code = main(sys.argv[1:]); "
         "ray = 'ray' in sys.modules and '--ray-address' not in sys.argv; "
         "sys.exit(96 if ray else 97 if 'torch' in sys.modules else code)")


def command(*args, **popen) -> list[str]:
    return [sys.executable, "-c", _MAIN, *map(str, args)]


def cli(*args, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def tune(path: Path, bars: int = 4, shift: int = 0) -> Path:
    """A one-track melody, a scale walk of ``bars`` 4/4 bars; ``shift`` makes each file its own."""
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000)])
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    for index in range(bars * 4):
        pitch = scale[(index * 3 + shift) % 8] + 12 * ((index // 16) % 2)
        track += [mido.Message("note_on", note=pitch, velocity=80, time=0),
                  mido.Message("note_off", note=pitch, time=480)]
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)
    return path


def records(folder: Path) -> dict[str, dict]:
    lines = (folder / RESULTS_NAME).read_text().splitlines()
    return {record["item"]: record for record in map(json.loads, lines)}


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.mid"))}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".part")]


def without_seconds(found: dict[str, dict]) -> dict[str, dict]:
    return {key: {k: v for k, v in record.items() if k not in ("seconds", "message", "node")}
            for key, record in found.items()}


def test_two_workers_write_what_one_writes_and_a_second_run_resumes(tmp_path):
    folder = tmp_path / "in"
    for index in range(4):
        tune(folder / ("sub" if index % 2 else "") / f"t{index}.mid", shift=index)
    broken = folder / "broken.mid"
    broken.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff")
    two, one = tmp_path / "two", tmp_path / "one"
    first = cli("harmonize", folder, "-o", two, "--workers", "2", "--seed", "3")
    assert first.returncode == 1, first.stderr
    assert "1 of 5 items failed" in first.stderr and f"{broken}: not a readable MIDI file" in first.stderr
    assert "4 of 5 items done" in first.stdout and "2 local workers" in first.stdout
    assert cli("harmonize", folder, "-o", one, "--workers", "1", "--seed", "3").returncode == 1
    assert outputs(two) == outputs(one) and len(outputs(two)) == 4
    assert without_seconds(records(two)) == without_seconds(records(one))
    found = records(two)
    assert {k: r["status"] for k, r in found.items()} == {"broken.mid": "failed", "sub/t1.mid": "done",
                                                          "sub/t3.mid": "done", "t0.mid": "done", "t2.mid": "done"}
    assert found["t0.mid"]["output"] == "t0.mid" and found["t0.mid"]["attempts"] == 1
    assert "not a readable MIDI file" in found["broken.mid"]["error"]

    stamps = {p: p.stat().st_mtime_ns for p in two.rglob("*.mid")}
    again = cli("harmonize", folder, "-o", two, "--workers", "2", "--seed", "3")
    assert again.returncode == 1 and "4 done earlier, 1 failed earlier" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in two.rglob("*.mid")} == stamps

    tune(broken, shift=7)  # the user fixes the file and asks for the failed items again
    (two / "t0.mid").unlink()  # and an output went missing: it is made again
    fixed = cli("harmonize", folder, "-o", two, "--workers", "2", "--seed", "3", "--retry-failed")
    assert fixed.returncode == 0, fixed.stderr
    assert "3 done earlier" in fixed.stdout and "2 of 2 items done" in fixed.stdout
    assert outputs(two)["t0.mid"] == outputs(one)["t0.mid"]
    assert {r["status"] for r in records(two).values()} == {DONE}

    changed = cli("harmonize", folder, "-o", two, "--workers", "2", "--seed", "4")
    assert changed.returncode == 0 and "5 made with other options, done again" in changed.stdout


def _workers_of(driver: int) -> list[int]:
    """The pool's worker processes: the driver's children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            line = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == driver and b"spawn_main" in line:
            found.append(int(entry.name))
    return found


def wait_for_results(folder: Path, process: subprocess.Popen, count: int = 1) -> None:
    deadline = time.monotonic() + 60
    path = folder / RESULTS_NAME
    while not (path.exists() and len(path.read_text().splitlines()) >= count):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)


def test_a_worker_killed_mid_item_leaves_no_partial_output_and_the_item_is_done_once(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    for index in range(6):
        tune(folder / f"long{index}.mid", bars=400, shift=index)  # about a second an item
    process = TiedPopen(command("harmonize", folder, "-o", out, "--workers", "2", "--seed", "1"), cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_results(out, process)
    time.sleep(0.2)  # the worker that finished first has taken its next item; the other is mid-item
    victims = _workers_of(process.pid)
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    found = records(out)
    assert sorted(found) == [f"long{i}.mid" for i in range(6)]
    assert {r["status"] for r in found.values()} == {DONE}
    assert max(r["attempts"] for r in found.values()) == 2  # the killed worker's item, run again
    assert leftovers(out) == []
    assert sorted(outputs(out)) == sorted(found)
    for path in out.glob("*.mid"):
        assert [t.name for t in mido.MidiFile(path).tracks] == ["melody", "chords"]


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    for index in range(6):
        tune(folder / f"long{index}.mid", bars=400, shift=index)
    process = TiedPopen(command("harmonize", folder, "-o", out, "--workers", "2", "--seed", "1"), cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_results(out, process)
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends the whole foreground group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopped:" in stderr and "the same command resumes" in stderr and "Traceback" not in stderr
    assert leftovers(out) == []
    finished = records(out)
    assert 1 <= len(finished) < 6
    written = sorted(p.name for p in out.glob("*.mid"))
    # every recorded item has its output; an item that ended just as the stop came may have its
    # output and no record (it is done again), but no output is ever partial
    assert set(finished) <= set(written)
    for name in written:
        assert [t.name for t in mido.MidiFile(out / name).tracks] == ["melody", "chords"]
    resumed = cli("harmonize", folder, "-o", out, "--workers", "2", "--seed", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} done earlier" in resumed.stdout and f"{6 - len(finished)} items done" in resumed.stdout
    assert sorted(records(out)) == [f"long{i}.mid" for i in range(6)]


def test_continue_from_a_manifest_writes_what_the_single_file_command_writes(tmp_path):
    from tests.test_continuation_cli import write_phrase

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        write_phrase(tmp_path / "in" / f"{name}.mid", bars=4)
    (tmp_path / "songs.csv").write_text("input,output\nin/a.mid,first.mid\nin/b.mid,second.mid\n")
    batch = cli("continue", tmp_path / "songs.csv", "-o", tmp_path / "out", "--bars", "1", "--seed", "5",
                "--workers", "2")
    assert batch.returncode == 0, batch.stderr
    single = cli("continue", tmp_path / "in" / "b.mid", "-o", tmp_path / "single.mid", "--bars", "1", "--seed", "5")
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "out" / "second.mid").read_bytes() == (tmp_path / "single.mid").read_bytes()
    assert sorted(records(tmp_path / "out")) == ["first.mid", "second.mid"]


def test_snc_encode_from_a_manifest_fails_only_the_bad_row(tmp_path):
    from engines.snc import SncReader
    from tests.test_snc import write_song

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_song(tmp_path / name, seconds=1.0)
    rows = [{"master": "one/master.wav", "stems": {"vocals": "one/vocals.wav", "bass": "one/bass.wav"}},
            {"master": "two/master.wav", "stems": {"vocals": "two/vocals.wav"}, "mode": "lossless",
             "output": "two.snc"},
            {"master": "two/master.wav", "stems": {"vocals": "two/missing.wav"}, "output": "bad.snc"}]
    manifest = tmp_path / "songs.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    result = cli("snc", "encode", "--manifest", manifest, "-o", out, "--workers", "1")
    assert result.returncode == 1 and "1 of 3 items failed" in result.stderr, result.stderr
    assert "missing.wav" in records(out)["bad.snc"]["error"]
    assert SncReader(out / "one" / "master.snc").info()["mode"] == "transparent"
    assert SncReader(out / "two.snc").info()["mode"] == "lossless"
    assert sorted(p.name for p in out.rglob("*.snc")) == ["master.snc", "two.snc"]
    assert leftovers(out) == [] and not list(out.rglob(".snc-*"))
    renders = tmp_path / "renders"
    rendered = cli("snc", "render", out, "-o", renders, "--context", "karaoke", "--workers", "1")
    assert rendered.returncode == 0, rendered.stderr
    assert sorted(p.relative_to(renders).as_posix() for p in renders.rglob("*.wav")) == ["one/master.wav", "two.wav"]
    assert sf.info(renders / "two.wav").duration == pytest.approx(1.0, abs=0.01)


def scratch_owner(folder: Path) -> tuple[int, Path] | None:
    """An SNC encoder at work in ``folder``: its process and its scratch folder (``.snc-PID-XXXXXXXX``)."""
    for path in folder.glob(".snc-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            return int(pid), path
    return None


def song_manifest(folder: Path, modes: list[str], seconds: float) -> Path:
    """One song (tests/test_snc.py's) encoded once per row, in ``modes``, to ``<row>-<mode>.snc``."""
    from tests.test_snc import write_song

    write_song(folder, seconds=seconds)
    manifest = folder / "songs.jsonl"
    manifest.write_text("".join(json.dumps({"master": "master.wav", "stems": {"vocals": "vocals.wav",
                                                                             "bass": "bass.wav"},
                                            "mode": mode, "output": f"{row}-{mode}.snc"}) + "\n"
                                for row, mode in enumerate(modes)))
    return manifest


def test_an_encoder_killed_mid_song_leaves_no_scratch_folder_nor_partial_snc(tmp_path):
    from engines.snc import SncReader

    manifest, out = song_manifest(tmp_path, ["lossless"], seconds=3.0), tmp_path / "out"
    process = TiedPopen(command("snc", "encode", "--manifest", manifest, "-o", out, "--workers", "1"),
                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = set()
    deadline = time.monotonic() + 90
    # every worker that takes the song is killed inside its scratch folder: after the third the
    # item fails, and no later encode in that folder is left to sweep what the last one left
    while process.poll() is None:
        assert time.monotonic() < deadline, "the encode did not end"
        pid, _ = scratch_owner(out) or (None, None)
        if pid is not None and pid not in killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.01)
    _, stderr = process.communicate()
    assert len(killed) == 3 and process.returncode == 1, stderr
    assert "1 of 1 items failed" in stderr and "the worker died on this item 3 times (last: signal SIGKILL)" in stderr
    assert sorted(p.name for p in out.iterdir()) == [RESULTS_NAME]  # no .snc-PID-* folder, no .part, no .snc
    again = cli("snc", "encode", "--manifest", manifest, "-o", out, "--workers", "1", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0-lossless.snc", RESULTS_NAME]
    assert SncReader(out / "0-lossless.snc").info()["mode"] == "lossless"


def test_va_analyze_on_a_folder_writes_one_curve_per_video(tmp_path):
    from engines.va import read_curve
    from engines.va.synthetic import Shot, write_video

    (tmp_path / "in" / "scene").mkdir(parents=True)
    write_video(tmp_path / "in" / "calm.mp4", [Shot(3, (0.45, 0.5, 0.55), 0.2, 0.0, seed=1)])
    write_video(tmp_path / "in" / "scene" / "lively.mp4", [Shot(1, (0.9, 0.6, 0.3), 0.75, 0.6, seed=i)
                                                           for i in range(3)])
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    result = cli("va", "analyze", tmp_path / "in", "-o", out, "--workers", "2")
    assert result.returncode == 1 and "1 of 3 items failed" in result.stderr, result.stderr
    assert str(tmp_path / "in" / "broken.mp4") in result.stderr
    assert len(read_curve(out / "calm.csv")) > 20 and len(read_curve(out / "scene" / "lively.csv")) > 20


class _ThreadsJob:
    """What a pool worker was given: its thread share, the thread-pool variables it started with
    (set before it imports numpy) and its process."""

    def settings(self) -> dict:
        return {}

    def setup(self, threads: int) -> tuple:
        from core.batch.local import THREAD_VARIABLES

        return threads, {name: os.environ.get(name) for name in THREAD_VARIABLES}, os.getpid()

    def process(self, state: tuple, item: Item) -> tuple:
        return state


def test_each_pool_worker_gets_its_share_of_the_cores_for_onnx_runtime_and_numpy():
    from core.batch import gather, placement
    from core.batch.local import THREAD_VARIABLES, cpu_count

    items = [Item(f"i{index}", ()) for index in range(4)]
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for workers in (2, 3):
        _, count, threads = placement(workers, None, len(items), cpu_count())
        assert count == workers and threads == max(1, cpu_count() // workers)
        results, where = gather(_ThreadsJob(), items, workers)
        assert where.startswith(f"{workers} local workers x {threads} thread")
        seen = {result.value[2] for result in results}
        assert len(seen) == workers and os.getpid() not in seen  # each worker took an item first
        for given, environment, _ in (result.value for result in results):
            assert given == threads and environment == dict.fromkeys(THREAD_VARIABLES, str(threads))
    assert {name: os.environ.get(name) for name in THREAD_VARIABLES} == before  # the driver's own are kept
    assert placement(None, None, 1, 8)[1:] == (1, 8) and placement(None, None, 0, 8)[1:] == (1, 8)
    assert placement(None, "auto", 5, 8) == ("Ray at auto", None, 1)


def test_without_ray_the_address_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "blocked" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('Ray is not installed here')\n")
    tune(tmp_path / "in" / "t.mid")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    result = cli("harmonize", tmp_path / "in", "-o", tmp_path / "out", "--ray-address", "auto", env=env)
    assert result.returncode == 1, result.stderr
    assert "pip install 'scorebridge[ray]'" in result.stderr and "Traceback" not in result.stderr


def test_a_local_batch_never_imports_ray(tmp_path):
    tune(tmp_path / "in" / "t.mid")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = cli("harmonize", tmp_path / "in", "-o", tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr  # 96 would mean ray was imported


@pytest.mark.parametrize("text, message", [
    ("input,output\na.mid,x.mid,extra\n", "more cells than the header names"),
    ("input\n", "lists no item"),
])
def test_bad_csv_manifests_are_named_errors(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        manifest_rows(path)


def test_a_manifest_row_may_not_write_outside_the_output_folder(tmp_path):
    tune(tmp_path / "a.mid")
    (tmp_path / "songs.csv").write_text("input,output\na.mid,../../elsewhere.mid\n")
    result = cli("harmonize", tmp_path / "songs.csv", "-o", tmp_path / "out")
    assert result.returncode == 1 and "would write outside -o" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_json_lines_manifest_names_its_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"input": "a.mid"}\n\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"m.jsonl:3: each line must be a JSON object"):
        manifest_rows(path)
    path.write_text('{"input": "a.mid"}\n{"input": \n')
    with pytest.raises(ConfigError, match=r"m.jsonl:2: not JSON"):
        manifest_rows(path)


def test_a_results_manifest_cut_mid_line_loses_only_that_line(tmp_path):
    path = tmp_path / "results.jsonl"
    results = Results(path)
    results.record(Result("a", DONE, "a.mid", 0.5))
    results.close()
    with open(path, "a") as handle:
        handle.write('{"item": "b", "status": "do')
    loaded = Results(path).load()
    assert list(loaded.records) == ["a"] and loaded.unreadable == 1


def test_stale_temporaries_of_the_batch_outputs_are_swept_and_no_other_file(tmp_path):
    (tmp_path / ".a.mid.k3j9x0aa.part").write_text("half")
    (tmp_path / ".other.mid.k3j9x0aa.part").write_text("not ours")
    (tmp_path / "a.mid").write_text("done before")
    assert sweep_temporaries([Item("a", (str(tmp_path / "a.mid"),))]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.mid.k3j9x0aa.part", "a.mid"]


def test_a_run_with_many_bad_files_names_the_first_and_counts_the_rest(tmp_path):
    from cli.batch import FAILURES_SHOWN

    folder = tmp_path / "in"
    folder.mkdir()
    bad = [folder / f"bad{index:02d}.mid" for index in range(FAILURES_SHOWN + 3)]
    for path in bad:
        path.write_bytes(b"not MIDI at all")
    tune(folder / "zz-good.mid")
    result = cli("harmonize", folder, "-o", tmp_path / "out", "--workers", "1")
    assert result.returncode == 1, result.stderr
    assert f"{len(bad)} of {len(bad) + 1} items failed" in result.stderr
    named = [path for path in bad if f"{path}: not a readable MIDI file" in result.stderr]
    assert len(named) == FAILURES_SHOWN
    assert f"... and 3 more, each with its error in {RESULTS_NAME}" in result.stderr
    assert all(records(tmp_path / "out")[path.name]["status"] == "failed" for path in bad)
    assert (tmp_path / "out" / "zz-good.mid").is_file()
