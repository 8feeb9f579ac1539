"""A second, independent MIDI client on the test JACK server: it plays the DAW's part."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import rtmidi

from bridge.ports.native_stderr import QUEUE_FULL_MARK
from core.children import TiedPopen
from tests.jackutil import ROOT

# Messages the peer's rtmidi input holds until its reading thread gets to them. rtmidi drops
# what does not fit (a note-off as well) and says so only on stderr: a full queue would make
# the peer hear a note the bridge did stop. The largest burst a test makes the bridge send (a
# two-slot echo of a 2 s flood) is under half of this, however late the reader runs.
PEER_QUEUE_LIMIT = 65536


def lost_by_peers(captured_err: str) -> int:
    """Messages the test process's rtmidi inputs dropped, counted from captured stderr
    (``capfd.readouterr().err``): rtmidi writes one line for each."""
    return captured_err.count(QUEUE_FULL_MARK.decode())


class Listener:
    """Records everything from one of the bridge's outputs (its main one by default).

    A JACK client whose cycle runs late under load can miss what was sent in that cycle (two
    listeners on one output, in one process, heard 19,652 and 19,658 of 19,658 messages in a
    flood): a test that must tell a note the bridge left sounding from one a listener missed
    the note-off of listens twice (``sounding_for_all``)."""

    def __init__(self, name: str, bridge_client: str, out_port: str | None = None) -> None:
        self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"{name}-recv", queue_size_limit=PEER_QUEUE_LIMIT)
        self.inp.ignore_types(sysex=False, timing=False, active_sense=True)
        target = out_port or f"{bridge_client}-out:out"
        self.inp.open_port(self.inp.get_ports().index(target), "in")
        self.received: list[tuple[float, list[int]]] = []
        self._lock = threading.Lock()
        # Polled, like the bridge's own JACK input: a Python callback would run inside JACK's
        # real-time cycle and, waiting for this process's GIL, make JACK drop events under load.
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            event = self.inp.get_message()
            if event is None:
                time.sleep(0.0002)
                continue
            with self._lock:
                self.received.append((time.perf_counter(), event[0]))

    def messages(self) -> list[list[int]]:
        with self._lock:
            return [m for _, m in self.received]

    def notes(self) -> list[tuple[float, list[int]]]:
        with self._lock:
            return [(t, m) for t, m in self.received if 0x80 <= m[0] < 0xA0]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def sounding(self) -> set[tuple[int, int]]:
        """(channel, note) pairs the bridge has started and not yet stopped."""
        on: dict[tuple[int, int], int] = {}
        for _, m in self.notes():
            key = (m[0] & 0x0F, m[1])
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                on[key] = on.get(key, 0) + 1
            else:
                on.pop(key, None)
        return set(on)

    def _quiet(self, quiet_s: float = 0.1, limit_s: float = 2.0) -> None:
        """Wait until nothing has arrived for ``quiet_s`` (at most ``limit_s``). rtmidi's JACK
        input unregisters its port without waiting for JACK's process cycle, which may be
        inside the port at that moment; a port still receiving (a bridge draining a flood)
        makes that far likelier, and it took the test process down (twice in CI)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            with self._lock:
                last = self.received[-1][0] if self.received else 0.0
            if time.perf_counter() - last >= quiet_s:
                return
            time.sleep(quiet_s / 2)

    def close(self) -> None:
        self._quiet()
        self._stop.set()
        self._poller.join(timeout=10)
        if self._poller.is_alive():  # (a starved thread still inside rtmidi: freeing the port would crash it)
            return
        self.inp.close_port()
        self.inp.delete()


def sounding_for_all(*listeners: Listener) -> set[tuple[int, int]]:
    """Notes every listener hears sounding: a note-off the bridge sent reaches at least one of
    them (each misses a late cycle of its own), one it never sent reaches none."""
    return set.intersection(*(listener.sounding() for listener in listeners))


class Peer(Listener):
    """Sends to the bridge's input and records everything from the bridge's main output."""

    def __init__(self, name: str, bridge_client: str, out_port: str | None = None) -> None:
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"{name}-send")
        self._last_sent = 0.0
        self.out.open_port(self.out.get_ports().index(f"{bridge_client}:in"), "out")
        super().__init__(name, bridge_client, out_port)

    def send(self, data: list[int]) -> float:
        sent = time.perf_counter()
        self.out.send_message(data)
        self._last_sent = time.perf_counter()
        return sent

    def close_sender(self) -> None:
        """Close the sending client only, as a DAW or controller that quits or is unplugged."""
        if self.out is not None:
            # JACK's cycle takes what was sent from rtmidi's ring buffer: let it (a few cycles)
            # before the port goes, so no cycle is still writing it when it is unregistered.
            time.sleep(max(0.0, self._last_sent + 0.05 - time.perf_counter()))
            self.out.close_port()
            self.out.delete()
            self.out = None

    def close(self) -> None:
        self.close_sender()
        super().close()


class _Process(TiedPopen):
    """A Popen whose stderr is read as it comes: a child that fills an unread stderr pipe
    blocks in its next write, and rtmidi writes there from JACK's thread for every message
    its input queue drops, so an unread pipe stops the bridge's MIDI input under a flood."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._err_stream, self.stderr = self.stderr, None
        self._err: list[str] = []
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read_err(self) -> None:
        with self._err_stream:
            for chunk in iter(lambda: self._err_stream.read(4096), ""):
                self._err.append(chunk)

    def communicate(self, input=None, timeout=None):
        out, _ = super().communicate(input, timeout)
        self._err_reader.join(timeout)
        return out, "".join(self._err)


class Bridge:
    """``python -m bridge serve`` as a subprocess on the test JACK server."""

    def __init__(self, client: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.client = client
        cmd = [sys.executable, "-m", "bridge", "serve", "--backend", "jack", "--client", client,
               "--osc-port", "0", *args]
        env = dict(os.environ if env is None else env)
        # The user's own learned map (~/.config/scorebridge) never takes part in a test.
        self._config_home = tempfile.mkdtemp(prefix="sb-config-")
        env.setdefault("XDG_CONFIG_HOME", self._config_home)
        self.proc = _Process(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        try:
            self.online_line = self._wait_online()
        except RuntimeError:
            shutil.rmtree(self._config_home, ignore_errors=True)
            raise
        self.osc_port = int(re.search(r"OSC [\d.]+:(\d+)", self.online_line).group(1))

    def _wait_online(self, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "online" in line:
                return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited at start: {self.proc.communicate()[1][-2000:]}")
        raise RuntimeError("bridge did not come online")

    def stop(self, sig: int = 15) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=15)
        shutil.rmtree(self._config_home, ignore_errors=True)
        return self.proc.returncode, out, err
