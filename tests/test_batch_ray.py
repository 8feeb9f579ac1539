"""The batch layer on a real Ray cluster started here (`ray start --head`, two CPUs, so two actors
in two worker processes): it writes the files and the results manifest the local pool writes,
and an actor killed with SIGKILL mid-item is restarted with its item done once."""

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

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]' (CI installs it)")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster of 2 CPUs; its workers import this checkout (PYTHONPATH). Token
    authentication is off for it and its drivers (the commands the tests run): Ray turns it on
    for a new cluster when this user has a token (~/.ray/auth_token) but not for a driver given
    an address, so the outcome would hang on what earlier Ray use left in the home folder."""
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "start.log"
    saved_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    ray = Path(sys.executable).with_name("ray")
    with open(log, "w") as output:
        head = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                                 "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                                 "--disable-usage-stats", "--object-store-memory", str(80 * 2**20)],
                                env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ending the command stops the node it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        if saved_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_mode


def test_ray_writes_the_files_and_the_manifest_the_local_pool_writes(cluster, tmp_path):
    from tests.test_snc import write_song

    folder = tmp_path / "in"
    for index in range(3):
        tune(folder / f"t{index}.mid", shift=index)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06")
    local = cli("harmonize", folder, "-o", tmp_path / "local", "--seed", "2", "--workers", "2")
    on_ray = cli("harmonize", folder, "-o", tmp_path / "ray", "--seed", "2", "--ray-address", cluster, timeout=180)
    assert local.returncode == on_ray.returncode == 1, on_ray.stderr
    assert "1 of 4 items failed" in on_ray.stderr and f"Ray at {cluster}" in on_ray.stdout
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") and len(outputs(tmp_path / "local")) == 3
    assert without_seconds(records(tmp_path / "ray")) == without_seconds(records(tmp_path / "local"))

    write_song(tmp_path, seconds=1.0)
    manifest = tmp_path / "songs.jsonl"
    manifest.write_text("".join(json.dumps({"master": "master.wav", "stems": {"vocals": "vocals.wav",
                                                                             "bass": "bass.wav"},
                                            "mode": mode, "output": f"{mode}.snc"}) + "\n"
                                for mode in ("lossless", "compact")))
    for where, extra in (("snc-local", ()), ("snc-ray", ("--ray-address", cluster))):
        # one worker each: the codec's imports (scipy) cost more than two 1 s songs
        done = cli("snc", "encode", "--manifest", manifest, "-o", tmp_path / where, "--workers", "1", *extra,
                   timeout=180)
        assert done.returncode == 0, done.stderr
    for name in ("lossless.snc", "compact.snc"):
        assert (tmp_path / "snc-ray" / name).read_bytes() == (tmp_path / "snc-local" / name).read_bytes()
    assert without_seconds(records(tmp_path / "snc-ray")) == without_seconds(records(tmp_path / "snc-local"))


def _running_actor_item() -> int | None:
    """A Ray actor process inside ``run`` (Ray titles it ``ray::_Worker.run`` while it works)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_Worker.run"):
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
