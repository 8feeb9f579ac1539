"""The commands as a new user runs them: serve with --backend auto on a machine with no ALSA
sequencer and no JACK server, doctor."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.jackutil import ROOT


@pytest.mark.jack
def test_auto_backend_starts_a_private_jack_server_and_stops_it(tmp_path):
    server = f"sbauto{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=server)
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--osc-port", "0", "--duration", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "private JACK server, dummy driver" in out.stdout
    assert "started a private JACK server" in out.stderr
    assert "every note released" in out.stdout
    still = subprocess.run(["jack_lsp"], env=env, capture_output=True)
    assert still.returncode != 0, "the private JACK server outlived the bridge"


@pytest.mark.jack
def test_doctor_reports_what_works(jack_server):
    out = subprocess.run([sys.executable, "-m", "bridge", "doctor", "--osc-port", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "[ok  ] MIDI backend jack: usable" in out.stdout
    assert "JACK server: running" in out.stdout
    assert out.returncode == (1 if "FAIL" in out.stdout else 0)


def test_doctor_fails_when_the_osc_port_is_taken_by_something_else():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "bridge", "doctor", "--osc-port", str(port)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"127.0.0.1:{port} is taken by another program" in out.stdout


@pytest.mark.jack
def test_ports_are_reopened_when_the_jack_server_comes_back(jack_server):
    import json
    import time

    from bridge.remote import request
    from tests.jackutil import start_jack
    from tests.peer import Bridge, Peer

    name = f"sbloss{os.getpid()}"
    jack = start_jack(name)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    bridge = Bridge("sbloss", env=env)

    def status() -> dict:
        return json.loads(request("127.0.0.1", bridge.osc_port, "/scorebridge/status", "/scorebridge/status")[0])

    try:
        jack.terminate()
        jack.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "lost JACK server" not in status()["ports"]["events"]:
            time.sleep(0.2)
        assert "lost JACK server" in status()["ports"]["events"]
        assert status()["state"] == "online"
        jack = start_jack(name)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and status()["ports"]["in"] is None:
            time.sleep(0.2)
        assert status()["ports"]["in"] == "sbloss:in"
        os.environ["JACK_DEFAULT_SERVER"] = name
        try:
            peer = Peer("losspeer", "sbloss")
            peer.send([0x90, 72, 100])
            assert peer.wait_for(lambda: len(peer.sounding()) >= 3, 8.0)
            peer.close()
        finally:
            os.environ["JACK_DEFAULT_SERVER"] = jack_server
    finally:
        bridge.stop()
        jack.terminate()
        jack.wait(timeout=10)


@pytest.mark.jack
def test_doctor_shows_a_running_bridges_counters(start_bridge):
    bridge = start_bridge()
    out = subprocess.run([sys.executable, "-m", "bridge", "doctor", "--osc-port", str(bridge.osc_port)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "used by a running bridge (online)" in out.stdout
    assert "[ok  ] engine slot rule: rule running" in out.stdout
    assert "MIDI in: 0 accepted" in out.stdout
