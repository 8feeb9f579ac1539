"""The batch layer on a real two-node Ray cluster started here (`ray start --head` and a second
node by `ray start --address`, one CPU each, so two actors on two nodes): it writes the files and
the results manifest the local pool writes, with items run on both nodes; the eval harnesses
give the tables they give in one process; an actor killed with SIGKILL mid-item is restarted
with its item done once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jackutil import ROOT
from tests.test_batch import cli, command, leftovers, outputs, records, tune, without_seconds
from tests.test_eval_batch import (  # noqa: F401 - pop_split and tiny_cache: fixtures
    continuation_words,
    harmony_table,
    harmony_words,
    pop_split,
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


def _start_node(arguments: list[str], log: Path, env: dict[str, str], deadline: float) -> subprocess.Popen:
    """``ray start ARGUMENTS --block``, waited for: ending that command (SIGTERM) stops the node it
    started and nothing else, where ``ray stop`` would stop every Ray node of this user."""
    ray = Path(sys.executable).with_name("ray")
    with open(log, "w") as output:
        # no log monitor (the drivers do not print the workers' logs) and 80 MiB of object store
        # (items are paths): each node starts fewer processes and sooner
        node = subprocess.Popen([str(ray), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                 "--include-log-monitor=false", "--disable-usage-stats",
                                 "--object-store-memory", str(80 * 2**20), *arguments],
                                env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            _stop_node(node)
            pytest.fail(f"ray start {' '.join(arguments)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return node


def _stop_node(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGTERM)
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
    try:
        nodes.append(_start_node(["--head", "--port", str(port), "--include-dashboard=false", "--no-monitor",
                                  "--temp-dir", str(folder / "head")], folder / "head.log", env, deadline))
        nodes.append(_start_node(["--address", address, "--temp-dir", str(folder / "second")],
                                 folder / "second.log", env, deadline))
        _CLUSTER[:] = nodes
        yield address
    finally:
        for node in reversed(nodes):
            _stop_node(node)
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
    started = [subprocess.Popen(command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in runs]
    finished = []
    for process in started:
        stdout, stderr = process.communicate(timeout=180)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return finished


def test_ray_writes_the_files_and_the_manifest_the_local_pool_writes(cluster, tmp_path):
    from tests.test_snc import write_song

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

    write_song(tmp_path, seconds=1.0)
    manifest = tmp_path / "songs.jsonl"
    manifest.write_text("".join(json.dumps({"master": "master.wav", "stems": {"vocals": "vocals.wav",
                                                                             "bass": "bass.wav"},
                                            "mode": mode, "output": f"{mode}.snc"}) + "\n"
                                for mode in ("lossless", "compact")))
    # one worker each: the codec's imports (scipy) cost more than two 1 s songs
    encode = ("snc", "encode", "--manifest", manifest, "--workers", "1", "-o")
    for done in side_by_side((*encode, tmp_path / "snc-local"),
                             (*encode, tmp_path / "snc-ray", "--ray-address", cluster)):
        assert done.returncode == 0, done.stderr
    for name in ("lossless.snc", "compact.snc"):
        assert (tmp_path / "snc-ray" / name).read_bytes() == (tmp_path / "snc-local" / name).read_bytes()
    assert without_seconds(records(tmp_path / "snc-ray")) == without_seconds(records(tmp_path / "snc-local"))


def _running_actor_item() -> int | None:
    """An actor process of this module's cluster inside ``run`` (Ray titles it
    ``ray::_Worker.run`` while it works)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_Worker.run") and _ours(int(entry.name)):
                    return int(entry.name)
            except OSError:
                continue
    return None


def test_an_actor_killed_mid_item_is_restarted_and_every_item_is_done_once(cluster, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    for index in range(4):
        tune(folder / f"long{index}.mid", bars=400, shift=index)  # about a second an item
    process = subprocess.Popen(command("harmonize", folder, "-o", out, "--seed", "1", "--ray-address", cluster),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while (victim := _running_actor_item()) is None:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    found = records(out)
    assert sorted(found) == [f"long{i}.mid" for i in range(4)]
    assert {r["status"] for r in found.values()} == {"done"}
    assert leftovers(out) == [] and sorted(outputs(out)) == sorted(found)
    again = cli("harmonize", folder, "-o", out, "--seed", "1", "--ray-address", cluster, timeout=180)
    assert again.returncode == 0 and "4 done earlier" in again.stdout and "nothing left to do" in again.stdout


def test_the_eval_harnesses_give_on_ray_the_tables_they_give_in_one_process(cluster, tiny_cache, pop_split,  # noqa: F811
                                                                            tmp_path, capsys):
    for words in (harmony_words(tiny_cache), continuation_words(pop_split)):
        here, here_table = run_eval([*words, "--workers", "1"], tmp_path / "here.json", capsys, "this process")
        on_ray, ray_table = run_eval([*words, "--ray-address", cluster], tmp_path / "ray.json", capsys,
                                     f"Ray at {cluster}")
        assert without_timing(on_ray) == without_timing(here) and len(here_table.splitlines()) > 5
        if words[1] == "harmony":
            assert harmony_table(ray_table) == harmony_table(here_table)
        else:  # the last line names the run's seconds
            assert ray_table.splitlines()[:-1] == here_table.splitlines()[:-1]
