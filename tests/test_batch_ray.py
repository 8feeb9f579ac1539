"""The batch layer on a real two-node Ray cluster started here (`ray start --head` and a second
node by `ray start --address`, one CPU each, so two actors on two nodes), one cluster for the
module: `harmonize` writes the files and the results manifest the local pool writes, with items
run on both nodes; an `snc encode` run stopped by Ctrl-C and resumed with an actor killed
(SIGKILL) mid-song leaves no partial file, no scratch folder and no actor, does every song once
and ends with the local pool's files; `eval harmony` gives the tables it gives in one process.
Kept to a few small items: the cluster's start and each run's actors are most of the time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.children import TiedPopen
from tests.jackutil import ROOT
from tests.test_batch import (
    command,
    outputs,
    records,
    scratch_owner,
    song_manifest,
    tune,
    wait_for_results,
    without_seconds,
)
from tests.test_eval_batch import (  # noqa: F401 - tiny_cache: a fixture
    harmony_table,
    harmony_words,
    run_eval,
    tiny_cache,
    without_timing,
)

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]' (CI installs it)")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_node(arguments: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start ARGUMENTS --block``: ending that command (SIGTERM) stops the node it started
    and nothing else, where ``ray stop`` would stop every Ray node of this user."""
    ray = Path(sys.executable).with_name("ray")
    with open(log, "w") as output:
        # no log monitor (the drivers do not print the workers' logs) and 80 MiB of object store
        # (items are paths): each node starts fewer processes and sooner
        return TiedPopen([str(ray), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                          "--include-log-monitor=false", "--disable-usage-stats",
                          "--object-store-memory", str(80 * 2**20), *arguments],
                         env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                         death_signal=signal.SIGTERM)  # (SIGTERM: the node stops its Ray processes)


def _wait_for(ready: Callable[[], bool], nodes: list[subprocess.Popen], logs: list[Path], deadline: float) -> None:
    while not ready():
        if any(node.poll() is not None for node in nodes) or time.monotonic() > deadline:
            pytest.fail("the test cluster did not start:\n" + "\n".join(log.read_text()[-3000:] for log in logs))
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _stop_nodes(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)  # its own session: the node's processes, none of anyone else's
            node.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-node Ray cluster on this machine, one CPU each, so the batch layer's two actors run
    in two worker processes on two raylets: `ray start --head` and `ray start --address` the
    head, each with its temporary folder under the test's own (no /tmp/ray shared with other Ray
    users here; `--ray-address auto` cannot find it). Its workers import this checkout
    (PYTHONPATH). Token authentication is off for it and its drivers (the commands the tests
    run): Ray turns it on for a new cluster when this user has a token (~/.ray/auth_token) but
    not for a driver given an address, so the outcome would hang on what earlier Ray use left in
    the home folder. Yields the head's address; ``_CLUSTER`` holds the `ray start` processes."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("ray")
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    address, nodes = f"127.0.0.1:{port}", []
    deadline = time.monotonic() + 90
    logs = [folder / "head.log", folder / "second.log"]
    try:
        nodes.append(_start_node(["--head", "--port", str(port), "--include-dashboard=false", "--no-monitor",
                                  "--temp-dir", str(folder / "head")], logs[0], env))
        # the second node needs the head's GCS only, not the rest of the head: both start together
        _wait_for(lambda: _listening(port), nodes, logs[:1], deadline)
        nodes.append(_start_node(["--address", address, "--temp-dir", str(folder / "second")], logs[1], env))
        _wait_for(lambda: all("Ray runtime started" in log.read_text() for log in logs), nodes, logs, deadline)
        _CLUSTER[:] = nodes
        yield address
    finally:
        _stop_nodes(nodes)
        _CLUSTER.clear()
        if saved_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_mode


_CLUSTER: list[subprocess.Popen] = []  # the `ray start` processes of the module's cluster


def _ours(pid: int) -> bool:
    """Whether ``pid`` descends from one of this module's `ray start` processes."""
    roots = {node.pid for node in _CLUSTER}
    while pid > 1:
        if pid in roots:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def side_by_side(*runs: tuple) -> list[subprocess.CompletedProcess]:
    """The commands ``runs`` at once (a Ray driver spends most of its time waiting for its actors),
    each as ``cli`` runs it."""
    started = [TiedPopen(command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in runs]
    return [finish(process) for process in started]


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_ray_writes_the_files_and_the_manifest_the_local_pool_writes(cluster, tmp_path):
    folder = tmp_path / "in"
    for index in range(3):
        tune(folder / f"t{index}.mid", shift=index)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06")
    # one local worker (tests/test_batch.py has two give what one gives) against two actors on two nodes
    local, on_ray = side_by_side(("harmonize", folder, "-o", tmp_path / "local", "--seed", "2", "--workers", "1"),
                                 ("harmonize", folder, "-o", tmp_path / "ray", "--seed", "2", "--ray-address", cluster))
    assert local.returncode == on_ray.returncode == 1, on_ray.stderr
    assert "1 of 4 items failed" in on_ray.stderr and f"Ray at {cluster}" in on_ray.stdout
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") and len(outputs(tmp_path / "local")) == 3
    assert without_seconds(records(tmp_path / "ray")) == without_seconds(records(tmp_path / "local"))
    nodes = {record["node"] for record in records(tmp_path / "ray").values()}
    assert len(nodes) == 2 and all(len(node) == 56 for node in nodes), nodes  # both nodes' ids (hex)
    assert {record["node"] for record in records(tmp_path / "local").values()} == {""}


def _actors() -> list[int]:
    """The actor processes of this module's cluster (Ray titles them ``ray::_Worker``, and
    ``ray::_Worker.run`` while they work)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_Worker") and _ours(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _snc_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.snc"))}


def test_a_stopped_then_killed_ray_encode_resumes_to_the_files_the_local_pool_writes(cluster, tmp_path):
    """One `snc encode` batch on Ray, stopped with Ctrl-C mid-run, then resumed with an actor
    killed (SIGKILL) mid-song: no partial file and no scratch folder at any point, the stop
    leaves no actor behind, every song is encoded once and the files are those of the local pool."""
    modes = ["lossless", "compact", "lossless", "lossless"]
    manifest, out = song_manifest(tmp_path, modes, seconds=4.0), tmp_path / "ray"
    encode = ("snc", "encode", "--manifest", manifest, "-o")
    # the reference, beside the Ray runs: one local worker (tests/test_batch.py has two give what one gives)
    local = TiedPopen(command(*encode, tmp_path / "local", "--workers", "1"), cwd=ROOT, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    # one actor for each run (the module's other tests run two on two nodes): it is mid-song when
    # the first song is recorded; in the resumed run, the song killed on it is done again on the
    # actor Ray restarts in its place
    stopped = TiedPopen(command(*encode, out, "--ray-address", cluster, "--workers", "1"), cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_results(out, stopped)
    os.killpg(stopped.pid, signal.SIGINT)  # what a terminal sends the whole foreground group
    first = finish(stopped)
    assert first.returncode == 130, first.stderr
    assert "stopped:" in first.stderr and "the same command resumes" in first.stderr
    assert "Traceback" not in first.stderr and _actors() == []
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no .part, no .snc-PID-* folder
    recorded, written = records(out), _snc_files(out)  # a song that ended as the stop came: a file, no record
    assert 1 <= len(recorded) < len(modes) and set(recorded) <= set(written)

    resumed = TiedPopen(command(*encode, out, "--ray-address", cluster, "--workers", "1"), cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while (working := scratch_owner(out)) is None:
        assert resumed.poll() is None and time.monotonic() < deadline, resumed.communicate()
        time.sleep(0.01)
    victim, scratch = working
    os.kill(victim, signal.SIGKILL)
    second = finish(resumed)
    assert second.returncode == 0, second.stderr
    assert f"{len(recorded)} done earlier" in second.stdout
    left = len(modes) - len(recorded)
    assert second.stdout.count("wrote ") == left and f"{left} of {left} items done" in second.stdout
    assert not scratch.exists() and not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert {r["status"] for r in records(out).values()} == {"done"} and len(records(out)) == len(modes)
    assert (done := finish(local)).returncode == 0, done.stderr
    reference = _snc_files(tmp_path / "local")
    assert _snc_files(out) == reference and len(reference) == len(modes)
    assert all(reference[name] == data for name, data in written.items())  # what the stop left was whole
    assert without_seconds(records(out)) == without_seconds(records(tmp_path / "local"))


def test_the_eval_harness_gives_on_two_ray_nodes_the_tables_it_gives_in_one_process(cluster, tiny_cache,  # noqa: F811
                                                                                     tmp_path, capsys):
    """`eval harmony`, three songs on two actors on two nodes. `eval continuation` gathers its
    items through the same call (core.batch.pool.gather): tests/test_eval_batch.py has its
    tables the same on one and two workers."""
    here, here_table = run_eval([*harmony_words(tiny_cache), "--workers", "1"], tmp_path / "here.json", capsys,
                                "this process")
    # two actors of one CPU each (one per cluster CPU): one on each node
    on_ray, ray_table = run_eval([*harmony_words(tiny_cache), "--ray-address", cluster], tmp_path / "ray.json", capsys,
                                 f"Ray at {cluster}")
    assert without_timing(on_ray) == without_timing(here) and len(here_table.splitlines()) > 5
    assert harmony_table(ray_table) == harmony_table(here_table)
