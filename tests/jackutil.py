"""Test helpers that start real servers: a private JACK server with the dummy driver.

Every process a test starts is a ``TiedPopen``: it dies with the test process, even when that
is SIGKILLed or crashes (a bridge, jackd or JACK client left running skews every later
timing test on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from core.children import TiedPopen

ROOT = Path(__file__).resolve().parent.parent


def start_jack(name: str, period_frames: int = 64, log_path: str | None = None,
               client_timeout_ms: int | None = None) -> subprocess.Popen[bytes]:
    """``client_timeout_ms``: how long jackd waits for a client's cycle before it drops the
    client (jackd's ``-t``); long runs on a loaded machine raise it."""
    if shutil.which("jackd") is None:
        raise RuntimeError("jackd is not installed: run the README's test command, which installs jackd2")
    timeout = ["-t", str(client_timeout_ms)] if client_timeout_ms else []
    # SIGTERM, not SIGKILL, when the tests die: a killed jackd keeps its entry in JACK's
    # server registry, which holds eight servers.
    proc = TiedPopen(["jackd", "-n", name, "-R", *timeout, "-d", "dummy", "-r", "48000", "-p", str(period_frames)],
              stdout=subprocess.DEVNULL, stderr=open(log_path, "w") if log_path else subprocess.DEVNULL,
              death_signal=signal.SIGTERM)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("jackd -d dummy did not start")
