"""A stand-in for a test process, for ``test_orphans``: it starts children the way the tests
do (a JACK server, a bridge on it, a JACK client, and a child forked from a thread that has
ended), prints their pids as one JSON line and waits to be killed.

Run as ``python -m tests.orphan_parent SERVER_NAME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from benchmarks.jack_tools import midiseq
from core.children import TiedPopen
from tests.jackutil import start_jack
from tests.peer import Bridge


def main(server: str) -> None:
    jack = start_jack(server)
    os.environ["JACK_DEFAULT_SERVER"] = server
    bridge = Bridge(f"{server}b")
    seq = midiseq(f"{server}seq", 4800, [(0, 60, 100)])
    from_thread: list[subprocess.Popen] = []
    worker = threading.Thread(target=lambda: from_thread.append(TiedPopen(["sleep", "300"])))
    worker.start()
    worker.join()
    print(json.dumps({"jackd": jack.pid, "bridge": bridge.proc.pid, "jack_midiseq": seq.pid,
                      "from_thread": from_thread[0].pid}), flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main(sys.argv[1])
