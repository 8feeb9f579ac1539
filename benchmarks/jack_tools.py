"""C clients from jackd2 as load generators and recorders, so no Python client competes with
the bridge for the GIL or the CPU: jack_midiseq plays a looping pattern, jack_midi_dump records."""

from __future__ import annotations

import os
import subprocess
import time

from core.children import TiedPopen


def midiseq(name: str, loop_samples: int, notes: list[tuple[int, int, int]]) -> subprocess.Popen:
    """Loop ``notes`` = [(start_sample, pitch, length_samples)] every ``loop_samples``."""
    args = ["jack_midiseq", name, str(loop_samples)]
    for start, pitch, length in notes:
        args += [str(start), str(pitch), str(length)]
    return TiedPopen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def flood_pattern(events_per_s: int, rate: int = 48000, loop_s: float = 0.1) -> tuple[int, list]:
    """Note-on/off pairs at ``events_per_s``; pitches rise 21..108 through the loop."""
    loop = int(rate * loop_s)
    notes_per_loop = int(events_per_s * loop_s / 2)
    spacing = loop / notes_per_loop
    length = max(1, int(spacing / 2))
    return loop, [(int(i * spacing), 21 + i % 88, length) for i in range(notes_per_loop)]


class MidiDump:
    """jack_midi_dump writing to a file; ``events()`` parses (status, data1) pairs."""

    def __init__(self, client: str, path: str) -> None:
        self.client = client
        self.path = path
        self._file = open(path, "w")
        self.proc = TiedPopen(["jack_midi_dump", client], stdout=self._file, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout
            if f"{client}:input" in ports:
                return
            time.sleep(0.05)
        raise RuntimeError("jack_midi_dump did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self._file.close()

    def events(self) -> list[tuple[int, int]]:
        out = []
        with open(self.path) as handle:
            for line in handle:
                parts = line.split(":", 1)
                if len(parts) != 2:
                    continue
                fields = parts[1].split()
                if len(fields) >= 2:
                    try:
                        out.append((int(fields[0], 16), int(fields[1], 16)))
                    except ValueError:
                        continue
        return out


def count_gaps(events: list[tuple[int, int]], wrap_pitches: set[int]) -> int:
    """Lost events in a flood_pattern stream: on/off must alternate on the same pitch and each
    note-on's pitch must follow the previous one (p+1, or a wrap back to 21)."""
    gaps = 0
    last_on = None
    expect_off = None
    for status, pitch in events:
        kind = status & 0xF0
        if kind == 0x90:
            if expect_off is not None:
                gaps += 1  # the previous note-off is missing
            if last_on is not None and not (pitch == last_on + 1 or (pitch == 21 and last_on in wrap_pitches)):
                gaps += 1
            last_on, expect_off = pitch, pitch
        elif kind == 0x80:
            if expect_off != pitch:
                gaps += 1
            expect_off = None
    return gaps


def connect(src: str, dst: str) -> None:
    subprocess.run(["jack_connect", src, dst], check=True)


def env_with_server(name: str) -> dict:
    return dict(os.environ, JACK_DEFAULT_SERVER=name)
