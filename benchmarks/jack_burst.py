"""How many messages of a burst reach a JACK listener, with the bridge's output pace and
without it, side by side on one private server.

    .venv/bin/python benchmarks/jack_burst.py [--bursts 50,100,200,400,2000] [--repeats 3] [--json OUT]

rtmidi's JACK output writes everything it holds into the port's buffer at the next cycle and
drops what does not fit. The sender is the bridge's own ``RtMidiOutput`` (paced as ``serve``
runs it, and unpaced); the listener is jackd2's C client ``jack_midi_dump``. Each burst is sent
as fast as Python can, then the listener's count is read after a pause.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rtmidi  # noqa: E402

from benchmarks.jack_tools import MidiDump  # noqa: E402
from bridge.ports.rtmidi_backend import JACK_OUTPUT_BURST, JACK_OUTPUT_WINDOW_S, RtMidiOutput  # noqa: E402
from tests.jackutil import start_jack  # noqa: E402


def _count(dump: MidiDump) -> int:
    return len(dump.events())


def run(bursts: list[int], repeats: int) -> dict:
    name = f"sbburst{os.getpid()}"
    jackd = start_jack(name)
    os.environ["JACK_DEFAULT_SERVER"] = name
    results: dict[str, dict[int, list[int]]] = {"paced": {}, "unpaced": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dump = MidiDump(f"{name}dump", f"{tmp}/dump.txt")
            midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"{name}send")
            midi_out.open_virtual_port("out")
            os.system(f"jack_connect {name}send:out {name}dump:input")
            time.sleep(0.5)
            ports = {"paced": RtMidiOutput("paced", midi_out, paced=True),
                     "unpaced": RtMidiOutput("unpaced", midi_out, paced=False)}
            try:
                for _ in range(repeats):
                    for size in bursts:
                        for mode in ("unpaced", "paced"):  # side by side, same load
                            before = _count(dump)
                            for i in range(size):
                                ports[mode].send_bytes([0x90, i % 128, 1])
                            time.sleep(0.3)
                            dump._file.flush()
                            results[mode].setdefault(size, []).append(_count(dump) - before)
            finally:
                midi_out.close_port()
                midi_out.delete()
                dump.stop()
    finally:
        jackd.terminate()
        jackd.wait(timeout=10)
    return {
        "command": " ".join(["benchmarks/jack_burst.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": os.getloadavg(),
        "pace": {"burst": JACK_OUTPUT_BURST, "window_s": JACK_OUTPUT_WINDOW_S},
        "jack": "dummy driver, 48 kHz, 64-frame period",
        "received": {mode: {str(size): counts for size, counts in by_size.items()}
                     for mode, by_size in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", default="50,100,200,400,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run([int(b) for b in args.bursts.split(",")], args.repeats)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
