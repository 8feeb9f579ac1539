"""Nothing a test or a bridge starts outlives it: a test process that is SIGKILLed or crashes
takes its JACK server, bridges and JACK clients with it (one left running, a bridge flooding
at 87% CPU, skewed later timing tests), and so does a ``serve`` with its private JACK server.
The tie is the kernel's (``core.children``), so these run on Linux."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.jack import PrivateJackServer, jack_running, pid_file_for, reap_orphaned_private_jack
from core.children import TiedPopen
from tests.jackutil import ROOT
from tests.peer import Bridge

pytestmark = [pytest.mark.jack, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                    reason="the tie to the parent is Linux's prctl")]


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


def _end(pids: list[int]) -> None:
    """After a failure: stop what is left (SIGTERM first: jackd leaves JACK's registry)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not _wait_gone(pids, 5.0):
            return


def test_the_children_of_a_killed_test_process_die_with_it(tmp_path):
    # A fixed name: jackd's registry holds eight servers, and a failed run must not use one up.
    errors = tmp_path / "helper.err"
    with open(errors, "w") as err:
        helper = TiedPopen([sys.executable, "-m", "tests.orphan_parent", "sborphans"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=err, text=True)
    children: dict[str, int] = {}
    try:
        ready, _, _ = select.select([helper.stdout], [], [], 60)
        assert ready and helper.poll() is None, f"the helper never reported its children: {errors.read_text()[-2000:]}"
        children = json.loads(helper.stdout.readline())
        # Alive before the kill, the one forked from a thread that has ended too.
        assert [name for name, pid in children.items() if not _running(pid)] == []
        helper.kill()
        helper.wait(timeout=10)
        left = _wait_gone(list(children.values()), 10.0)
        assert left == [], {name: pid for name, pid in children.items() if pid in left}
    finally:
        helper.kill()
        helper.communicate(timeout=10)
        _end(list(children.values()))


def test_a_killed_serve_takes_its_private_jack_server_with_it(tmp_path, monkeypatch):
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("--backend auto picks the ALSA sequencer here")
    server = "sborphanserve"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    bridge = Bridge(f"sbo{os.getpid()}", "--backend", "auto", env=env)
    jackd = json.loads(pid_file_for(server).read_text())["pid"]
    try:
        assert "private JACK server" in bridge.online_line and _running(jackd)
        bridge.proc.kill()
        bridge.proc.communicate(timeout=10)
        assert _wait_gone([jackd], 10.0) == []
        assert not jack_running(server)
        assert not reap_orphaned_private_jack(server)  # nothing left to stop: the mark was stale
        assert not pid_file_for(server).exists()
    finally:
        bridge.stop()
        _end([jackd])


def test_a_private_server_started_from_a_thread_outlives_the_thread(tmp_path, monkeypatch):
    """The port watcher restarts a private server that died: the restart must not stop again
    when the thread that asked for it ends (the kernel ties a child to the forking thread)."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    server = PrivateJackServer(server_name="sborphanthread")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    starter.join(timeout=30)
    try:
        assert errors == [] and server.running()
        time.sleep(1.0)
        assert server.running() and jack_running("sborphanthread")
    finally:
        server.stop()
