"""Hostile input on the OSC surface and the command line: a running ``serve`` (test JACK server)
gets raw UDP datagrams and liblo's ``oscsend``; the CLI runs as a subprocess."""

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
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge.osc import build_message
from bridge.remote import request
from core.children import TiedPopen
from core.errors import ParameterError
from tests.jackutil import ROOT

KILLERS = {
    "address not UTF-8": b"/\xff\x00\x00",
    "bundle element of size -4": b"#bundle\x00" + bytes(8) + b"\xff\xff\xff\xfc",
    "blob of size -1": b"/scorebridge/rule/velocity\x00\x00,b\x00\x00\xff\xff\xff\xff",
}


def nested_bundle(depth: int) -> bytes:
    datagram = build_message("/scorebridge/dump")
    for _ in range(depth):
        datagram = b"#bundle\x00" + bytes(8) + len(datagram).to_bytes(4, "big") + datagram
    return datagram


class Surface:
    """A raw UDP OSC client that reads the bridge's replies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)

    def send(self, address: str, *args: object) -> None:
        builder = OscMessageBuilder(address=address)
        for arg in args:  # floats as doubles: 1e300 does not fit a 32-bit float
            builder.add_arg(arg, "d" if isinstance(arg, float) else None)
        self.sock.sendto(builder.build().dgram, ("127.0.0.1", self.port))

    def reply(self, address: str, *args: object) -> tuple[str, list]:
        """Send and wait for a /scorebridge/error or ``address`` reply."""
        self.send(address, *args)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            data, _ = self.sock.recvfrom(65536)
            for timed in OscPacket(data).messages:  # the bridge's replies are well-formed
                if timed.message.address in ("/scorebridge/error", address):
                    return timed.message.address, list(timed.message.params)
        raise AssertionError(f"no reply to {address}")

    def close(self) -> None:
        self.sock.close()


def status(bridge) -> dict:
    return json.loads(request("127.0.0.1", bridge.osc_port, "/scorebridge/status", "/scorebridge/status",
                              timeout_s=5.0)[0])


def oscsend(bridge, *args: str) -> None:
    subprocess.run(["oscsend", "localhost", str(bridge.osc_port), *args], check=True, timeout=10)


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env=ENV)


# -- 1. one datagram never disables OSC --------------------------------------------------------------
def test_one_datagram_never_disables_osc(start_bridge):
    bridge = start_bridge("--no-web")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in [*KILLERS.values(), nested_bundle(400), nested_bundle(3000)]:
            sock.sendto(datagram, ("127.0.0.1", bridge.osc_port))
    started = time.monotonic()
    report = status(bridge)
    assert time.monotonic() - started < 2.0
    assert report["osc"]["malformed"] == len(KILLERS) + 2
    assert report["osc"].get("handler_errors", 0) == 0
    oscsend(bridge, "/scorebridge/rule/velocity", "i", "77")  # a real sender still controls it
    deadline = time.monotonic() + 3
    while status(bridge)["engines"]["rule"]["values"]["velocity"] != 77:
        assert time.monotonic() < deadline, "a well-formed message was not applied after the garbage"
        time.sleep(0.05)
    code, _, err = bridge.stop()
    assert code == 0 and "Traceback" not in err
    assert len(err) < 20_000, "the malformed packets flooded the log"


REFUSED = [
    ("/scorebridge/transport/locate", float("inf")),
    ("/scorebridge/transport/locate", 1e300),
    ("/scorebridge/transport/locate", float("nan")),
    ("/scorebridge/transport/locate", -4.0),
    ("/scorebridge/transport/playing", float("nan")),
    ("/scorebridge/transport/tempo", float("nan")),
    ("/scorebridge/transport/tempo", float("inf")),
    ("/scorebridge/rule/enabled", "x"),
    ("/scorebridge/rule/velocity", float("nan")),
    ("/scorebridge/rule/velocity", float("inf")),
    ("/scorebridge/subscribe", float("inf")),
    ("/scorebridge/status", "127.0.0.1", float("inf")),
    ("/scorebridge/affect/valence", float("nan")),
]


def test_non_finite_and_mistyped_values_are_refused_with_an_error_reply(start_bridge):
    bridge = start_bridge("--no-web", "--clock", "external")
    surface = Surface(bridge.osc_port)
    try:
        for address, *values in REFUSED:
            kind, args = surface.reply(address, *values)
            assert kind == "/scorebridge/error", (address, values, args)
        report = status(bridge)
        assert report["osc"].get("handler_errors", 0) == 0
        assert report["osc"]["rejected"] == len(REFUSED)
        assert report["transport"]["playing"] is False and report["engines"]["rule"]["enabled"] is True
        assert report["transport"]["beats"] < 1e6
    finally:
        surface.close()


def test_oscsend_infinite_locate_and_nan_play_are_refused_and_osc_goes_on(start_bridge):
    bridge = start_bridge("--no-web", "--clock", "external")
    oscsend(bridge, "/scorebridge/transport/locate", "d", "inf")
    oscsend(bridge, "/scorebridge/transport/playing", "f", "nan")
    oscsend(bridge, "/scorebridge/rule/enabled", "s", "x")
    time.sleep(0.2)
    report = status(bridge)
    assert report["osc"]["rejected"] == 3 and report["osc"].get("handler_errors", 0) == 0
    assert report["transport"]["playing"] is False


# -- 2. live engine swaps load only registered engines -------------------------------------------------
def test_an_unregistered_module_is_never_imported_through_osc(start_bridge, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "sb_side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n\nclass X:\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    bridge = start_bridge("--no-web", "--slot", "rule=rule@all/2",
                          "--slot", "slow=tests.engines_for_tests:Slow@all/3")
    surface = Surface(bridge.osc_port)
    try:
        for name in ("sb_side_effect:X", "sb_side_effect", "this:X", "os:system", "x" * 5000):
            kind, args = surface.reply("/scorebridge/rule/engine", name)
            assert kind == "/scorebridge/error", args
            assert "not a registered engine" in args[0] or "characters" in args[0], args
        assert not marker.exists(), "the module's top-level code ran"
        # a reference the user named at start may be swapped to; a registered name too
        surface.send("/scorebridge/rule/engine", "tests.engines_for_tests:Slow")
        surface.send("/scorebridge/slow/engine", "thru")
        deadline = time.monotonic() + 3
        while [status(bridge)["engines"][s]["engine"] for s in ("rule", "slow")] != ["slow", "thru"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        surface.close()
    assert not marker.exists()


# -- 3. file parameters stay inside the allowed folders ------------------------------------------------
SECRET = "sb-secret-7f3a"


def test_file_parameters_refuse_devices_fifos_proc_and_escaping_links(start_bridge, tmp_path, monkeypatch):
    allowed = tmp_path / "curves"
    allowed.mkdir()
    good = allowed / "good.csv"
    good.write_text("time_s,valence,arousal\n0,0.5,-0.5\n10,-0.5,0.5\n")
    os.mkfifo(allowed / "fifo.csv")
    (allowed / "passwd.csv").symlink_to("/etc/passwd")
    (allowed / "environ.csv").symlink_to("/proc/self/environ")
    with open(allowed / "huge.csv", "wb") as handle:  # sparse: 65 MiB that take no disk
        handle.truncate(65 * 1024 * 1024)
    (tmp_path / "outside.csv").write_text(good.read_text())
    monkeypatch.setenv("SB_TEST_SECRET", SECRET)
    bridge = start_bridge("--no-web", "--slot", "va=va@all/2", "--allow-dir", str(allowed))
    surface = Surface(bridge.osc_port)
    try:
        for path in ("/dev/zero", "/proc/self/environ", "/proc/self/cmdline", "/etc/passwd",
                     str(allowed / "fifo.csv"), str(allowed / "passwd.csv"), str(allowed / "environ.csv"),
                     str(allowed / "huge.csv"), str(tmp_path / "outside.csv"), str(allowed / "missing.csv"),
                     str(allowed / ".." / "outside.csv")):
            started = time.monotonic()
            kind, args = surface.reply("/scorebridge/va/curve", path)
            assert kind == "/scorebridge/error", (path, args)
            assert time.monotonic() - started < 2.0
            assert SECRET not in args[0] and "root:" not in args[0]
        report = status(bridge)
        text = json.dumps(report)
        assert SECRET not in text and "root:x" not in text
        assert report["engines"]["va"]["values"]["curve"] == "none" and report["engines"]["va"]["enabled"]
        surface.send("/scorebridge/va/curve", str(good))
        deadline = time.monotonic() + 3
        while status(bridge)["engines"]["va"]["engine_status"].get("samples") != 2:
            assert time.monotonic() < deadline, "the allowed curve was not loaded"
            time.sleep(0.05)
    finally:
        surface.close()
    code, out, err = bridge.stop()
    assert code == 0 and SECRET not in out + err and "root:x" not in out + err


def test_a_bad_curve_in_an_allowed_folder_is_reported_without_its_content(start_bridge, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"time_s,valence,arousal\n0,{SECRET},0\n")
    config = tmp_path / "bridge.toml"
    config.write_text('[[slots]]\nname = "va"\nengine = "va"\n')
    bridge = start_bridge("--no-web", "--config", str(config))  # the config's folder is allowed
    oscsend(bridge, "/scorebridge/va/curve", "s", str(bad))
    deadline = time.monotonic() + 3
    while not status(bridge)["engines"]["va"]["engine_status"].get("error"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    error = status(bridge)["engines"]["va"]["engine_status"]["error"]
    assert str(bad) in error and "line 2" in error and SECRET not in error
    _, out, err = bridge.stop()
    assert SECRET not in out + err


def test_snc_songs_take_their_extension_and_stay_in_the_song_folder(tmp_path, monkeypatch):
    from engines.snc_player.engine import SncEngine

    song = SncEngine.declaration("file")
    assert song.coerce("none.snc") == "none"
    monkeypatch.setenv("SCOREBRIDGE_SNC_DIR", str(tmp_path))
    (tmp_path / "escape.snc").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "pipe.snc")
    (tmp_path / "real.snc").write_bytes(b"SNC")
    with pytest.raises(ParameterError, match="out of the song folder"):
        SncEngine._song_path("escape")
    with pytest.raises(ParameterError, match="not a regular file"):
        SncEngine._song_path("pipe")
    assert SncEngine._song_path("real") == (tmp_path / "real.snc").resolve()


# -- 4. the web token never leaks -------------------------------------------------------------------
def test_the_web_token_stays_out_of_status_logs_and_the_process_list(start_bridge, tmp_path, monkeypatch):
    token = "tok-" + "9" * 20
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    bridge = start_bridge("--web-port", "0", "--web-allow-remote", "--web-token-file", str(token_file))
    report = status(bridge)
    assert report["web"].startswith("http://") and token not in json.dumps(report)
    assert token not in bridge.online_line
    assert token not in Path(f"/proc/{bridge.proc.pid}/cmdline").read_text()
    _, out, err = bridge.stop()
    assert token not in out + err
    monkeypatch.setenv("SCOREBRIDGE_WEB_TOKEN", token)
    from_env = start_bridge("--web-port", "0", "--web-allow-remote")
    assert token not in json.dumps(status(from_env)) + from_env.online_line
    assert "token in" not in from_env.online_line  # given, not generated
    _, out, err = from_env.stop()
    assert token not in out + err


def test_the_web_token_on_the_command_line_is_warned_about(start_bridge):
    bridge = start_bridge("--web-port", "0", "--web-allow-remote", "--web-token", "visible-token-1")
    assert "visible-token-1" not in json.dumps(status(bridge)) + bridge.online_line
    _, _, err = bridge.stop()
    assert "process list" in err and "visible-token-1" not in err


# -- 5. no feedback loops, replies only to allowed targets, feedback rate-limited ------------------------
def test_subscribing_the_bridge_to_itself_is_refused(start_bridge):
    bridge = start_bridge("--no-web")
    surface = Surface(bridge.osc_port)
    try:
        for args in ((bridge.osc_port,), ("127.0.0.1", bridge.osc_port), ("localhost", bridge.osc_port),
                     ("127.0.0.2", bridge.osc_port), ("0.0.0.0", bridge.osc_port)):
            kind, reply = surface.reply("/scorebridge/subscribe", *args)
            assert kind == "/scorebridge/error", args
        for args in (("127.0.0.1", bridge.osc_port), ("10.20.30.40", 9000), ("127.0.0.1", 70000)):
            kind, _ = surface.reply("/scorebridge/status", *args)
            assert kind == "/scorebridge/error", args
        surface.send("/scorebridge/dump")
        time.sleep(0.5)
        report = status(bridge)
        assert report["osc_subscribers"] == 0
        assert report["osc"]["handled"] < 30, "the bridge is answering itself"
    finally:
        surface.close()


def test_feedback_is_rate_limited_overall(start_bridge):
    from bridge.osc import FEEDBACK_BURST, FEEDBACK_RATE_PER_S

    bridge = start_bridge("--no-web", "--slot", "rule=rule@all/2", "--slot", "two=rule@all/3")
    listeners = []
    try:
        for _ in range(32):
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            listener.bind(("127.0.0.1", 0))
            listener.setblocking(False)
            listeners.append(listener)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for listener in listeners:
                sock.sendto(build_message("/scorebridge/subscribe", listener.getsockname()[1]),
                            ("127.0.0.1", bridge.osc_port))
            time.sleep(0.2)
            started = time.monotonic()
            received = 0
            while time.monotonic() - started < 1.0:
                sock.sendto(build_message("/scorebridge/dump"), ("127.0.0.1", bridge.osc_port))
                time.sleep(0.01)
                for listener in listeners:
                    while True:
                        try:
                            listener.recv(65536)
                        except BlockingIOError:
                            break
                        received += 1
        assert 0 < received <= FEEDBACK_RATE_PER_S * 1.2 + FEEDBACK_BURST, received
        assert status(bridge)["osc"].get("feedback_deferred", 0) > 0
    finally:
        for listener in listeners:
            listener.close()


# -- serve's options and config values are checked -----------------------------------------------------
BAD_OPTIONS = [("--osc-port", "70000"), ("--osc-port", "-1"), ("--tempo", "-5"), ("--tempo", "nan"),
               ("--tempo", "inf"), ("--web-port", "-1"), ("--web-port", "70000"), ("--duration", "nan")]
BAD_CONFIGS = ["[clock]\ntempo_bpm = nan\n", "[clock]\ntempo_bpm = -5\n", "[osc]\nport = 70000\n",
               "[web]\nport = -1\n", "[osc]\nport = \"x\"\n", "midi = 3\n", "[clock]\ntempo_bpm = \"fast\"\n"]


def test_bad_serve_options_are_argparse_errors(capsys):
    from cli.main import main

    for option in BAD_OPTIONS:  # parsed before anything starts: run in this process
        with pytest.raises(SystemExit) as stopped:
            main(["serve", *option])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and f"argument {option[0]}" in err, (option, err)


def test_bad_config_values_are_clear_errors(tmp_path, capsys):
    from cli.main import main

    for number, text in enumerate(BAD_CONFIGS):
        config = tmp_path / f"bad{number}.toml"
        config.write_text(text)
        assert main(["serve", "--config", str(config), "--backend", "jack"]) == 1, text
        err = capsys.readouterr().err
        assert err.startswith("scorebridge serve: error: ") and str(config) in err, (text, err)


def test_bad_serve_options_stop_the_command_without_a_traceback():
    done = cli("serve", "--tempo", "nan", timeout_s=20)
    assert done.returncode == 2 and "argument --tempo" in done.stderr and "Traceback" not in done.stderr


# -- a signal stops an offline command through its cleanup ----------------------------------------------
def test_sigterm_stops_a_command_through_its_finally_blocks(tmp_path):
    marker = tmp_path / "cleaned"
    script = (
        "import os, signal, sys, time\n"
        "import cli.main as cli\n"
        "def run(args):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(10)\n"
        "    finally:\n"
        f"        open({str(marker)!r}, 'w').write('x')\n"
        "    return 0\n"
        "cli._run_command = run\n"
        "sys.exit(cli.main(['engines']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=20, env=ENV)
    assert done.returncode == 143 and marker.exists()
    assert "scorebridge: stopped by SIGTERM" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_while_waiting_for_a_bridge_exits_143_without_a_traceback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        proc = TiedPopen([sys.executable, "-m", "bridge", "status", "--osc-port",
                          str(silent.getsockname()[1])], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
        silent.settimeout(10)
        silent.recvfrom(65536)  # the request arrived: the command is waiting for the reply
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err


# -- a closed stdout ends a command quietly ---------------------------------------------------------------
def test_a_closed_stdout_ends_engines_and_status_quietly(start_bridge):
    bridge = start_bridge("--no-web")
    for args in (["engines"], ["status", "--osc-port", str(bridge.osc_port)]):
        proc = TiedPopen([sys.executable, "-m", "bridge", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)
        proc.stdout.close()  # the reader is gone before the command writes (`| head -c 0`)
        with proc.stderr:
            err = proc.stderr.read().decode()
        proc.wait(timeout=20)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_sighup_stops_serve_like_sigterm(start_bridge, peer_for):
    bridge = start_bridge("--no-web")
    peer = peer_for(bridge)
    peer.send([0x90, 72, 100])
    assert peer.wait_for(lambda: peer.sounding(), 3.0)
    code, out, err = bridge.stop(signal.SIGHUP)
    assert code == 0 and "every note released" in out and "Traceback" not in err
    assert peer.wait_for(lambda: not peer.sounding(), 2.0), peer.sounding()


def test_datagrams_the_kernel_drops_in_a_flood_are_counted():
    """A flood faster than the receive loop overflows the socket's buffer; the kernel's own
    count of those drops reaches the counters (and so ``status``) instead of vanishing."""
    from bridge.osc import OscServer

    server = OscServer(port=0)
    server.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny buffer
        datagram = build_message("/scorebridge/nothing/here", [1.0])
        for _ in range(20000):
            sender.sendto(datagram, ("127.0.0.1", server.port))
        time.sleep(0.5)
        sender.sendto(datagram, ("127.0.0.1", server.port))  # carries the running total
        def read() -> int:
            return sum(v for k, v in server.counters.items() if k != "kernel_dropped")

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and read() + server.counters["kernel_dropped"] < 20001:
            time.sleep(0.05)
        assert server.counters["kernel_dropped"] > 0, server.counters
        assert read() + server.counters["kernel_dropped"] == 20001, server.counters  # every one accounted
    finally:
        sender.close()
        server.stop()


def test_a_refused_parameter_reaches_the_subscribers_too(start_bridge):
    bridge = start_bridge("--no-web", "--slot", "rule=rule@all/2")
    watcher, surface = Surface(bridge.osc_port), Surface(bridge.osc_port)
    try:
        watcher.send("/scorebridge/subscribe", watcher.sock.getsockname()[1])
        time.sleep(0.2)
        kind, reply = surface.reply("/scorebridge/rule/voices", 9)  # out of 3..4
        assert kind == "/scorebridge/error" and "/scorebridge/rule/voices" in reply[0]
        deadline, seen = time.monotonic() + 3.0, []
        while time.monotonic() < deadline and not seen:
            data, _ = watcher.sock.recvfrom(65536)
            seen = [list(t.message.params) for t in OscPacket(data).messages
                    if t.message.address == "/scorebridge/error"]
        assert seen and "/scorebridge/rule/voices" in seen[0][0], seen
    finally:
        watcher.close()
        surface.close()
