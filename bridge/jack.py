"""A private JACK server with the dummy driver, for headless machines with no sound card, and
the JACK (and ALSA sequencer) connection listings the session watches.

A private server is marked as ours: a pid file in the user's runtime folder names its pid,
its start time, its command line and the bridge that owns it. On Linux the server is also
told to stop (SIGTERM, so that it leaves JACK's server registry) when the bridge dies, however
it dies (``core.children``). The ``jack_lsp`` listings are not tied: one ends within
milliseconds, or when its server (a private one, stopped with the bridge) goes, and a tie
costs a full fork (the page tables copied, other threads' memory mappings held up: 4 ms more
per listing from a process with 400 MB resident), every half second in a real-time process.
A later bridge stops an orphaned server only when the pid file proves it was a bridge's own
and its owner is dead; a server started by anyone else is never touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from core.children import TiedPopen
from core.errors import BackendError

__all__ = ["PrivateJackServer", "JackConnectionWatcher", "jack_running", "jack_connections", "alsa_connections",
           "parse_jack_connections", "parse_alsa_connections", "reap_orphaned_private_jack",
           "pid_file_for", "default_server_name"]

log = logging.getLogger(__name__)

# How long a stopping private server may take before it is killed.
_STOP_TIMEOUT_S = 5.0


def default_server_name() -> str:
    """The JACK server clients reach without a name: ``$JACK_DEFAULT_SERVER`` or ``default``."""
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def _jack_env(server_name: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if server_name:
        env["JACK_DEFAULT_SERVER"] = server_name
    return env


def jack_running(server_name: str | None = None, timeout_s: float = 2.0, attempts: int = 1) -> bool:
    """True when a JACK server answers (``jack_lsp`` from jackd2's tools). A busy server
    sometimes refuses one client: ``attempts`` asks again before saying no."""
    tool = shutil.which("jack_lsp")
    if tool is None:
        return False
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.2)
        try:
            done = subprocess.run([tool], env=_jack_env(server_name), capture_output=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0:
            return True
    return False


def parse_jack_connections(text: str) -> dict[str, set[str]]:
    """``jack_lsp -c`` output -> port -> the ports connected to it."""
    connections: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            if current is not None:
                current.add(line.strip())
        else:
            current = connections.setdefault(line.strip(), set())
    return connections


def jack_connections(server_name: str | None = None, timeout_s: float = 3.0) -> dict[str, set[str]] | None:
    """Every JACK port and what is connected to it; None when no server answers. Raises
    TimeoutError when ``jack_lsp`` does not finish in time: on a busy machine that says
    nothing about the server."""
    tool = shutil.which("jack_lsp")
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, "-c"], env=_jack_env(server_name), capture_output=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"jack_lsp did not answer within {timeout_s} s") from None
    if done.returncode != 0:
        return None
    return parse_jack_connections(done.stdout.decode(errors="replace"))


_ALSA_CLIENT = re.compile(r'^Client\s+(\d+)\s*:\s*"(.*)"')
_ALSA_PORT = re.compile(r'^\s+Port\s+(\d+)\s*:\s*"(.*)"')
_ALSA_FROM = re.compile(r"^\s+Connected From:\s*(.*)$")


def parse_alsa_connections(text: str) -> dict[str, set[str]]:
    """``/proc/asound/seq/clients`` -> "client name:port name" -> the "client:port" numbers
    sending to it."""
    connections: dict[str, set[str]] = {}
    client = port = None
    for line in text.splitlines():
        if (match := _ALSA_CLIENT.match(line)) is not None:
            client, port = match.group(2), None
        elif (match := _ALSA_PORT.match(line)) is not None and client is not None:
            port = f"{client}:{match.group(2)}"
            connections.setdefault(port, set())
        elif (match := _ALSA_FROM.match(line)) is not None and port is not None:
            for source in match.group(1).split(","):
                address = source.strip().split("[")[0].strip()
                if address:
                    connections[port].add(address)
    return connections


def alsa_connections(path: str = "/proc/asound/seq/clients") -> dict[str, set[str]] | None:
    """The ALSA sequencer's connections, or None when the listing cannot be read."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    return parse_alsa_connections(text)


_JACK_NO_START_SERVER = 0x01
_CONNECT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_SHUTDOWN_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class JackConnectionWatcher:
    """A small JACK client that hears every connection ending (libjack's port-connect
    callback) and calls ``on_disconnect(port_name, time_s)`` for the watched ports. Listings
    every half second miss a sender that connects and leaves between two of them; this does
    not. ``server_gone`` is set when libjack says the server left this client (a listing
    that fails may only mean a busy server)."""

    def __init__(self, client_name: str, watched: Callable[[], set[str]],
                 on_disconnect: Callable[[str, float], None]) -> None:
        path = ctypes.util.find_library("jack")
        if path is None:
            raise BackendError("libjack not found")
        lib = ctypes.CDLL(path)
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.jack_set_port_connect_callback.argtypes = [ctypes.c_void_p, _CONNECT_CALLBACK, ctypes.c_void_p]
        lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN_CALLBACK, ctypes.c_void_p]
        lib.jack_activate.argtypes = [ctypes.c_void_p]
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        lib.jack_port_by_id.restype = ctypes.c_void_p
        lib.jack_port_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.jack_port_name.restype = ctypes.c_char_p
        lib.jack_port_name.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._watched = watched
        self._on_disconnect = on_disconnect
        self._callback = _CONNECT_CALLBACK(self._connect_changed)  # kept alive: libjack holds it
        self.server_gone = threading.Event()
        self._shutdown_callback = _SHUTDOWN_CALLBACK(lambda _arg: self.server_gone.set())
        status = ctypes.c_int(0)
        self._client = lib.jack_client_open(client_name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
        if not self._client:
            raise BackendError(f"could not open the JACK client {client_name!r} (status {status.value:#x})")
        lib.jack_on_shutdown(self._client, self._shutdown_callback, None)
        if lib.jack_set_port_connect_callback(self._client, self._callback, None) != 0 \
                or lib.jack_activate(self._client) != 0:
            self.close()
            raise BackendError("could not watch JACK connections")

    def _name(self, port_id: int) -> str:
        port = self._lib.jack_port_by_id(self._client, port_id)
        name = self._lib.jack_port_name(port) if port else None
        return name.decode(errors="replace") if name else ""

    def _connect_changed(self, a: int, b: int, connected: int, _arg: object) -> None:
        # On libjack's notification thread (not the real-time one): look up and hand over.
        if connected or not self._client:
            return
        now = time.perf_counter()
        watched = self._watched()
        for name in (self._name(a), self._name(b)):
            if name in watched:
                self._on_disconnect(name, now)

    def close(self) -> None:
        client, self._client = self._client, None
        if client:
            self._lib.jack_client_close(client)


# -- marking the private server as ours ---------------------------------------------------
def _state_folder() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "scorebridge"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "scorebridge"


def pid_file_for(server_name: str) -> Path:
    """Where the bridge records the private server called ``server_name``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", server_name)
    return _state_folder() / f"private-jackd-{safe}.json"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and certainly not ours to stop
    return True


def _read_mark(path: Path) -> dict[str, Any] | None:
    try:
        mark = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(mark, dict) or not all(isinstance(mark.get(k), int) for k in ("pid", "owner_pid")):
        return None
    return mark


def _is_our_server(mark: dict[str, Any]) -> bool:
    """The pid in the mark is still the jackd this bridge started: same start time, same
    command line (which names the server)."""
    pid = mark["pid"]
    return (_start_ticks(pid) is not None and _start_ticks(pid) == mark.get("start_ticks")
            and _cmdline(pid) == mark.get("cmdline"))


def reap_orphaned_private_jack(server_name: str | None = None) -> bool:
    """Stop the private server a dead bridge left behind, if the pid file proves it is one.
    True when one was stopped. A stale pid file is removed; a live owner's server is kept."""
    name = server_name or default_server_name()
    path = pid_file_for(name)
    mark = _read_mark(path)
    if mark is None:
        return False
    if mark["owner_pid"] != os.getpid() and _alive(mark["owner_pid"]) \
            and _start_ticks(mark["owner_pid"]) == mark.get("owner_start_ticks"):
        return False  # another bridge is using it
    if not _is_our_server(mark):
        path.unlink(missing_ok=True)  # the server is gone (or the pid now belongs to another process)
        return False
    pid = mark["pid"]
    log.warning("stopping the private JACK server %r (pid %d) that a bridge which is no longer running "
                "left behind", name, pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline and _is_our_server(mark):
        time.sleep(0.05)
    if _is_our_server(mark):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


class PrivateJackServer:
    """``jackd -R -d dummy`` owned by this process, stopped when the bridge stops."""

    def __init__(self, sample_rate: int = 48000, period_frames: int = 64,
                 server_name: str | None = None) -> None:
        self.sample_rate = sample_rate
        self.period_frames = period_frames
        self.server_name = server_name
        self.process: subprocess.Popen[bytes] | None = None
        self._mark: Path | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise BackendError("jackd not found: install jackd2 (apt-get install jackd2)")
        name = self.server_name or default_server_name()
        # Named explicitly, so the command line alone says which server this process is.
        cmd = [jackd, "-R", "-n", name]  # real-time when permitted; jackd carries on without it otherwise
        cmd += ["-d", "dummy", "-r", str(self.sample_rate), "-p", str(self.period_frames)]
        deadline = time.monotonic() + timeout_s
        self._spawn(cmd, name)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                err = self._read_log()
                self._remove_mark()
                if "already active" in err and time.monotonic() + 0.5 < deadline:
                    # A server of that name is still shutting down (one a dead bridge left).
                    time.sleep(0.25)
                    self._spawn(cmd, name)
                    continue
                raise BackendError(f"private JACK server exited at start: {err.strip()[-400:]}")
            if jack_running(name, timeout_s=1.0):
                log.info("started a private JACK server (dummy driver, %d Hz, %d frames)",
                         self.sample_rate, self.period_frames)
                return
            time.sleep(0.1)
        self.stop()
        raise BackendError(f"private JACK server did not answer within {timeout_s} s")

    def _spawn(self, cmd: list[str], name: str) -> None:
        if self._log is not None:
            self._log.close()
        # A file, not a pipe: nobody reads jackd's messages while it runs, and a full pipe
        # would stop the server.
        self._log = tempfile.TemporaryFile()
        # Started again from the port watcher when it died: ``TiedPopen`` forks from a thread
        # that lasts, so the server is not stopped when the thread that asked for it ends.
        self.process = TiedPopen(cmd, stdout=subprocess.DEVNULL, stderr=self._log, death_signal=signal.SIGTERM)
        self._write_mark(name)

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def _write_mark(self, name: str) -> None:
        if self.process is None:
            return
        pid = self.process.pid
        # Read back from /proc, so the mark compares equal to what a later bridge reads there.
        mark = {"pid": pid, "start_ticks": _start_ticks(pid), "cmdline": _cmdline(pid),
                "server": name, "owner_pid": os.getpid(), "owner_start_ticks": _start_ticks(os.getpid())}
        path = pid_file_for(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(mark))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not record the private JACK server in %s: %s", path, exc)
            return
        self._mark = path

    def _remove_mark(self) -> None:
        if self._mark is None or self.process is None:
            return
        mark = _read_mark(self._mark)
        if mark is not None and mark["pid"] == self.process.pid:
            self._mark.unlink(missing_ok=True)
        self._mark = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._remove_mark()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
