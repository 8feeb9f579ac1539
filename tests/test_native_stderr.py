"""The serving process's stderr guard (bridge/ports/native_stderr.py): native writers (rtmidi
on JACK's thread) never wait for a slow reader of stderr, rtmidi's dropped-input lines are
counted, everything else reaches the real stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from core.children import TiedPopen
from tests.jackutil import ROOT

_CHILD = textwrap.dedent("""
    import ctypes, logging, sys, time
    sys.path.insert(0, {root!r})
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    from bridge.ports.native_stderr import NativeStderr
    guard = NativeStderr()
    if {guarded}:
        guard.start()
    libc = ctypes.CDLL(None)
    line = b"MidiInJack: message queue limit reached!!\\n"
    started = time.monotonic()
    for _ in range({lines}):
        libc.write(2, line, len(line))  # as rtmidi's std::cerr does, from native code
    libc.write(2, b"a native line\\n", 14)
    logging.getLogger("scorebridge").info("a python line")
    time.sleep(0.3)
    if {guarded}:
        guard.stop()
    print(f"wrote in {{time.monotonic() - started:.2f}} s; counted {{guard.counters['rtmidi_queue_full']}}", flush=True)
""")


def _child(guarded: bool, lines: int) -> subprocess.Popen[str]:
    code = _CHILD.format(root=str(ROOT), guarded=guarded, lines=lines)
    return TiedPopen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_native_lines_are_counted_and_the_rest_passed_on():
    child = _child(True, 500)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "counted 500" in out
    assert "a native line" in err and "a python line" in err
    assert "queue limit reached" not in err  # counted, summed into one warning
    assert "dropped 500 messages" in err


def test_a_reader_that_never_reads_stderr_blocks_no_native_writer():
    # 100,000 lines (4 MB) into a stderr pipe nobody reads (it holds 64 KB).
    guarded, bare = _child(True, 100_000), _child(False, 100_000)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and guarded.poll() is None:
            time.sleep(0.1)
        assert guarded.poll() == 0, "the guarded writer waited for the reader"
        # Without the guard the same writes stop at the full pipe.
        assert bare.poll() is None
    finally:
        bare.kill()
        bare.communicate(timeout=10)
        out, _ = guarded.communicate(timeout=10)
    assert "counted" in out
