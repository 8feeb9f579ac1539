"""Test helpers that start real servers: a private JACK server with the dummy driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_jack(name: str, period_frames: int = 64, log_path: str | None = None,
               client_timeout_ms: int | None = None) -> subprocess.Popen[bytes]:
    """``client_timeout_ms``: how long jackd waits for a client's cycle before it drops the
    client (jackd's ``-t``); long runs on a loaded machine raise it."""
    if shutil.which("jackd") is None:
        raise RuntimeError("jackd is not installed: run the README's test command, which installs jackd2")
    timeout = ["-t", str(client_timeout_ms)] if client_timeout_ms else []
    proc = subprocess.Popen(["jackd", "-n", name, "-R", *timeout, "-d", "dummy", "-r", "48000",
                             "-p", str(period_frames)],
                            stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "w") if log_path else subprocess.DEVNULL)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("jackd -d dummy did not start")
