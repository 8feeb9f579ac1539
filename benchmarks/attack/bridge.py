"""Attack area ``bridge``: a real ``serve`` on a private JACK server (dummy driver) under MIDI
floods, senders that vanish mid-chord, clients that disconnect, SIGTERM under load and a
SIGKILLed bridge that leaves its private JACK server behind.

Run it alone: ``python -m benchmarks.attack --only bridge [--quick]``. The full run floods
2.5 million messages (``FULL_FLOOD``); ``--quick`` a tenth of that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.attack.common import ROOT, AreaResult, rss_mb

sys.path.insert(0, str(ROOT))

from benchmarks.jack_tools import MidiDump, flood_pattern, midiseq
from tests.jackutil import start_jack
from tests.peer import Bridge, Peer

# Messages in the big JACK flood (full run), and its rate from jack_midiseq (a C client): the
# flood the bridge was first attacked with (2.5 M messages in 20 s).
FULL_FLOOD = 2_500_000
FLOOD_RATE_PER_S = 125_000
# The bridge's memory may grow this much during a flood before it counts as a leak (the
# engines' latency statistics and the bounded queues fill up to their limits).
FLOOD_RSS_GROWTH_MB = 80
# SIGTERM must end the bridge within this long, flood or not.
STOP_LIMIT_S = 2.0
# A note left sounding this long after its sender went away is stuck.
RELEASE_LIMIT_S = 1.5
NOTE_KEYS = 16 * 128  # note-offs an inbox may hold past its capacity


def _status(bridge: Bridge) -> dict:
    done = subprocess.run([sys.executable, "-m", "bridge", "status", "--osc-port", str(bridge.osc_port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=15,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"status failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def _wait_port(name: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if name in subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout:
            return True
        time.sleep(0.05)
    return False


def _jack(*args: str) -> None:
    subprocess.run(["jack_" + args[0], *args[1:]], capture_output=True, check=False)


def _stop(result: AreaResult, probe: str, bridge: Bridge, limit_s: float = STOP_LIMIT_S) -> str:
    """SIGTERM the bridge; a slow stop is a hang, a traceback a crash. Returns its stderr."""
    started = time.monotonic()
    if bridge.proc.poll() is None:
        bridge.proc.send_signal(signal.SIGTERM)
    try:
        _, err = bridge.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        bridge.proc.kill()
        _, err = bridge.proc.communicate()
        result.add("hang", probe, "serve still running 30 s after SIGTERM")
        return err
    took = time.monotonic() - started
    if took > limit_s:
        result.add("hang", probe, f"SIGTERM took {took:.1f} s (limit {limit_s} s)")
    if "Traceback (most recent call last)" in err:
        result.add("crash", probe, err.strip().splitlines()[-1][:200])
    elif bridge.proc.returncode not in (0, -signal.SIGTERM):
        result.add("crash", probe, f"serve exited {bridge.proc.returncode} on SIGTERM")
    return err


def _check_bounded(result: AreaResult, probe: str, status: dict) -> None:
    for name, slot in status.get("engines", {}).items():
        inbox = slot.get("inbox")
        if inbox is None:
            if slot.get("queued", 0) > 4096:
                result.add("leak", probe, f"slot {name}: {slot['queued']} events queued, no limit")
            continue
        if inbox["high_water"] > inbox["capacity"] + NOTE_KEYS:
            result.add("leak", probe, f"slot {name}: queue reached {inbox['high_water']} "
                                      f"(capacity {inbox['capacity']})")


@contextmanager
def _server(workdir: Path) -> Iterator[str]:
    name = f"sbattack{os.getpid()}"
    proc = start_jack(name, log_path=str(workdir / "jackd.log"))
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield name
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old


def _flood(result: AreaResult, quick: bool, workdir: Path) -> None:
    """jack_midiseq floods the input of a bridge running a slow engine; the queues must stay
    bounded, memory flat, SIGTERM quick, and no note may sound once the flood is gone."""
    probe = "jack flood"
    result.probes += 1
    total = FULL_FLOOD // (10 if quick else 1)
    bridge = Bridge(f"sbatk{os.getpid()}f", "--slot", "thru=thru@all/1",
                    "--slot", "slow=tests.flood_engines:SlowThru@all/2", "--no-web")
    # The listener is a C client (jack_midi_dump): a Python one would lose messages itself.
    dump = MidiDump(f"atkdump{os.getpid()}", str(workdir / "dump.txt"))
    _jack("connect", f"{bridge.client}-out:out", f"atkdump{os.getpid()}:input")
    seq_name = f"atkflood{os.getpid()}"
    loop, notes = flood_pattern(FLOOD_RATE_PER_S)
    seq = midiseq(seq_name, loop, notes)
    try:
        if not _wait_port(f"{seq_name}:out"):
            result.add("crash", probe, "jack_midiseq did not start")
            return
        time.sleep(0.5)
        rss_before = rss_mb(bridge.proc.pid)
        _jack("connect", f"{seq_name}:out", f"{bridge.client}:in")
        started = time.monotonic()
        seconds = total / FLOOD_RATE_PER_S
        peak = rss_before
        while time.monotonic() - started < seconds:
            time.sleep(0.25)
            peak = max(peak, rss_mb(bridge.proc.pid))
        status = _status(bridge)
        _check_bounded(result, probe, status)
        if peak - rss_before > FLOOD_RSS_GROWTH_MB:
            result.add("leak", probe, f"RSS grew {peak - rss_before:.0f} MB during {total} messages "
                                      f"({rss_before:.0f} -> {peak:.0f} MB)")
        _jack("disconnect", f"{seq_name}:out", f"{bridge.client}:in")
        # The engines work off what they queued; then nothing may sound.
        deadline = time.monotonic() + 8.0
        sounding = _dump_sounding(dump)
        while time.monotonic() < deadline and sounding:
            time.sleep(0.25)
            sounding = _dump_sounding(dump)
        if sounding:
            result.add("stuck-note", probe, f"{len(sounding)} notes sounding 8 s after the flood")
        # SIGTERM under load: flood again and stop the bridge in the middle of it.
        result.probes += 1
        _jack("connect", f"{seq_name}:out", f"{bridge.client}:in")
        time.sleep(1.0)
        _stop(result, "SIGTERM during a flood", bridge)
    finally:
        seq.terminate()
        seq.wait(timeout=5)
        dump.stop()
        if bridge.proc.poll() is None:
            bridge.stop()


def _dump_sounding(dump: MidiDump) -> set[tuple[int, int]]:
    """(channel, note) pairs whose last message at the listener was a note-on."""
    sounding: set[tuple[int, int]] = set()
    for status, note in dump.events():
        if status & 0xF0 == 0x90:
            sounding.add((status & 0x0F, note))
        elif status & 0xF0 == 0x80:
            sounding.discard((status & 0x0F, note))
    return sounding


def _mixed_flood(result: AreaResult, quick: bool, workdir: Path) -> None:
    """Controllers, pitch bend, aftertouch, SysEx, clock and notes from one Python client as
    fast as it can send; then the player lets go of everything."""
    probe = "mixed flood"
    result.probes += 1
    bridge = Bridge(f"sbatk{os.getpid()}m", "--slot", "rule=rule@all/2",
                    "--slot", "slow=tests.flood_engines:SlowThru@all/3", "--no-web")
    peer = Peer(f"atkpeer{os.getpid()}m", bridge.client)
    # The sender's own Python input loses messages while it floods: a C client listens.
    dump = MidiDump(f"atkdumpm{os.getpid()}", str(workdir / "mixed-dump.txt"))
    _jack("connect", f"{bridge.client}-out:out", f"atkdumpm{os.getpid()}:input")
    try:
        started = time.monotonic()
        sent = 0
        rounds = 2_000 if quick else 20_000
        for i in range(rounds):
            channel = i % 4
            peer.send([0x90 | channel, 48 + i % 40, 100])
            for value in range(0, 128, 16):
                peer.send([0xB0 | channel, 1, value])
                peer.send([0xB0 | channel, 64, 127 if value < 64 else 0])
                peer.send([0xE0 | channel, 0, value])
                peer.send([0xD0 | channel, value])
            peer.send([0xF0, 0x7D, *([0x10] * 16), 0xF7])
            peer.send([0xF8])
            peer.send([0x80 | channel, 48 + (i - 7) % 40, 0])
            sent += 36
            if i % 20 == 0:
                time.sleep(0.003)  # let the sending client's JACK ring buffer drain
        # rtmidi's input queue (RTMIDI_QUEUE_LIMIT messages) drops what does not fit, note-offs
        # included, before the bridge sees it: a flood this far beyond what one core reads is
        # lost at the library's door (documented in docs/security.md). The player lets go once
        # the bridge has read its backlog, so that a note still sounding after that is the
        # bridge's doing.
        drained = _wait_input_drained(bridge)
        for channel in range(4):
            for pitch in range(48, 88):
                peer.send([0x80 | channel, pitch, 0])
            peer.send([0xB0 | channel, 64, 0])
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        status = _status(bridge)
        _check_bounded(result, probe, status)
        deadline = time.monotonic() + 8.0
        sounding = _dump_sounding(dump)
        while time.monotonic() < deadline and sounding:
            time.sleep(0.25)
            sounding = _dump_sounding(dump)
        if sounding:
            after = _status(bridge)
            inboxes = {n: e.get("inbox") for n, e in after.get("engines", {}).items()}
            reading = "" if drained else "; the bridge was still reading its input at the release"
            result.add("stuck-note", probe, f"{len(sounding)} notes sounding after {sent} messages "
                                            f"in {elapsed:.1f} s and every note released ({sorted(sounding)[:6]}; "
                                            f"bridge: {after.get('notes_sounding')} sounding, slots {inboxes}, input "
                                            f"{after.get('midi_in')}, queue {after.get('midi_in_queue')}{reading})")
    finally:
        peer.close()
        dump.stop()
        _stop(result, probe, bridge, limit_s=5.0)


def _wait_input_drained(bridge: Bridge, limit_s: float = 20.0) -> bool:
    """Wait until the bridge's input counters stop moving (its backlog is read); True when
    they settled within ``limit_s``."""
    deadline, last = time.monotonic() + limit_s, None
    while time.monotonic() < deadline:
        status = _status(bridge)
        seen = (json.dumps(status.get("midi_in"), sort_keys=True), status.get("midi_in_queue", {}).get("accepted"))
        if seen == last:
            return True
        last = seen
        time.sleep(0.3)
    return False


def _vanishing_senders(result: AreaResult, quick: bool, workdir: Path) -> None:
    """Senders that close, are disconnected, or die with notes held."""
    bridge = Bridge(f"sbatk{os.getpid()}v", "--slot", "rule=rule@all/2", "--slot", "thru=thru@all/1", "--no-web")
    listener = Peer(f"atkpeer{os.getpid()}v", bridge.client)
    try:
        for round_ in range(2 if quick else 5):
            # A client that sends a chord and closes at once.
            result.probes += 1
            sender = Peer(f"atksend{os.getpid()}x{round_}", bridge.client)
            for pitch in (60, 64, 67):
                sender.send([0x90, pitch + round_, 100])
            listener.wait_for(lambda: len(listener.sounding()) >= 3, 2.0)
            sender.close()
            if not listener.wait_for(lambda: not listener.sounding(), RELEASE_LIMIT_S):
                result.add("stuck-note", "sender closes with a chord held",
                           f"{len(listener.sounding())} notes sounding {RELEASE_LIMIT_S} s later")
            # A client disconnected by a patchbay (jack_disconnect) with notes held.
            result.probes += 1
            sender = Peer(f"atksend{os.getpid()}y{round_}", bridge.client)
            sender.send([0x91, 50 + round_, 90])
            listener.wait_for(lambda: len(listener.sounding()) >= 1, 2.0)
            _jack("disconnect", f"atksend{os.getpid()}y{round_}-send:out", f"{bridge.client}:in")
            if not listener.wait_for(lambda: not listener.sounding(), RELEASE_LIMIT_S):
                result.add("stuck-note", "sender disconnected with a note held",
                           f"{len(listener.sounding())} notes sounding {RELEASE_LIMIT_S} s later")
            sender.close()
        # A C client killed in the middle of its notes.
        result.probes += 1
        name = f"atkseq{os.getpid()}"
        seq = midiseq(name, 48000, [(0, 60, 40000), (100, 64, 40000), (200, 67, 40000)])
        try:
            if _wait_port(f"{name}:out"):
                _jack("connect", f"{name}:out", f"{bridge.client}:in")
                time.sleep(0.3)
        finally:
            seq.kill()
            seq.wait(timeout=5)
        if not listener.wait_for(lambda: not listener.sounding(), RELEASE_LIMIT_S + 0.5):
            result.add("stuck-note", "sender killed with notes held",
                       f"{len(listener.sounding())} notes sounding after the sender died")
    finally:
        listener.close()
        _stop(result, "stop after vanishing senders", bridge)


def _jackd_pids(server: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if not cmd or not cmd[0].endswith(b"jackd"):
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if server.encode() in cmd or f"JACK_DEFAULT_SERVER={server}".encode() in env:
            pids.append(int(entry.name))
    return pids


def _killed_bridge(result: AreaResult, workdir: Path) -> None:
    """SIGKILL a bridge that started a private JACK server; the next one must not adopt the
    orphan for ever: once it stops, no server of that name may run."""
    probe = "SIGKILLed serve with a private JACK server"
    result.probes += 1
    if os.path.exists("/dev/snd/seq"):
        return  # --backend auto takes the ALSA sequencer here: no private server to leave
    # A fixed name: jackd reclaims a dead server's registry entry only under the same name,
    # and its registry holds eight servers at most.
    server = "sbatkorphan"
    runtime = workdir / "runtime"
    runtime.mkdir(exist_ok=True)
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, XDG_RUNTIME_DIR=str(runtime))
    try:
        first = Bridge(f"sbatk{os.getpid()}k1", "--backend", "auto", "--no-web", env=env)
        first.proc.kill()
        first.proc.communicate(timeout=10)
        second = Bridge(f"sbatk{os.getpid()}k2", "--backend", "auto", "--no-web", env=env)
        second.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _jackd_pids(server):
            time.sleep(0.1)
        left = _jackd_pids(server)
        if left:
            result.add("leak", probe, f"private jackd {left} still running after both bridges ended")
    except RuntimeError as exc:
        result.add("crash", probe, str(exc)[-200:])
    finally:
        _stop_jackd(server)


def _stop_jackd(server: str) -> None:
    """SIGTERM first: a jackd that is killed outright leaves its entry in the shared registry."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _jackd_pids(server):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _jackd_pids(server):
            time.sleep(0.1)


def _status_and_web(result: AreaResult) -> None:
    result.probes += 1
    token = "attack-token-0123"
    bridge = Bridge(f"sbatk{os.getpid()}w", "--web-port", "0", "--web-allow-remote", "--web-token", token)
    try:
        if token in json.dumps(_status(bridge)):
            result.add("security", "status with a web token", "the OSC status reply holds the web token")
    finally:
        _stop(result, "stop with the web surface", bridge)
    result.probes += 1
    done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--backend", "jack", "--client",
                           f"sbatk{os.getpid()}p", "--osc-port", "0", "--web-port", "-1", "--duration", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=40,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": tempfile.mkdtemp()})
    if "online" in done.stdout and "web" in done.stdout.split("online", 1)[1]:
        result.add("crash", "serve --web-port -1", "announced a web port while the web thread died")
    elif "Traceback" in done.stderr:
        result.add("crash", "serve --web-port -1", done.stderr.strip().splitlines()[-1][:200])


def run(workdir: Path, quick: bool) -> AreaResult:
    result = AreaResult("bridge")
    with _server(workdir):
        for attack in (_vanishing_senders, _flood, _mixed_flood):
            try:
                attack(result, quick, workdir)
            except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
                result.add("crash", attack.__name__.strip("_"), f"{type(exc).__name__}: {str(exc)[-200:]}")
        try:
            _status_and_web(result)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            result.add("crash", "status and web", f"{type(exc).__name__}: {str(exc)[-200:]}")
    _killed_bridge(result, workdir)
    return result
