"""A private JACK server with the dummy driver, for headless machines with no sound card."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

from bridge.errors import BackendError

__all__ = ["PrivateJackServer", "jack_running"]

log = logging.getLogger(__name__)


def jack_running(server_name: str | None = None, timeout_s: float = 2.0) -> bool:
    """True when a JACK server answers (``jack_lsp`` from jackd2's tools)."""
    tool = shutil.which("jack_lsp")
    if tool is None:
        return False
    env = dict(os.environ)
    if server_name:
        env["JACK_DEFAULT_SERVER"] = server_name
    try:
        done = subprocess.run([tool], env=env, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class PrivateJackServer:
    """``jackd -R -d dummy`` owned by this process, stopped when the bridge stops."""

    def __init__(self, sample_rate: int = 48000, period_frames: int = 64,
                 server_name: str | None = None) -> None:
        self.sample_rate = sample_rate
        self.period_frames = period_frames
        self.server_name = server_name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise BackendError("jackd not found: install jackd2 (apt-get install jackd2)")
        cmd = [jackd, "-R"]  # real-time when permitted; jackd carries on without it otherwise
        if self.server_name:
            cmd += ["-n", self.server_name]
        cmd += ["-d", "dummy", "-r", str(self.sample_rate), "-p", str(self.period_frames)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise BackendError(f"private JACK server exited at start: {err.strip()[-400:]}")
            if jack_running(self.server_name, timeout_s=1.0):
                log.info("started a private JACK server (dummy driver, %d Hz, %d frames)",
                         self.sample_rate, self.period_frames)
                return
            time.sleep(0.1)
        self.stop()
        raise BackendError(f"private JACK server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
