"""Attack area ``osc``: a real ``serve`` on a private JACK server (dummy driver) gets the OSC
datagrams and messages of the hardening review, and the command line its hostile options.

Probes: datagrams that killed the receive loop or spun it (invalid UTF-8, negative bundle and
blob sizes, deep nesting) and a fuzz flood; non-finite and mistyped values; live engine swaps to
modules with import-time side effects; file parameters naming devices, FIFOs, /proc, /etc and
symlinks out of the allowed folder; the browser token in status, logs and ``ps``; the bridge
subscribed to itself, status sent to strangers, and the feedback rate; bad ``serve`` options
and config values; SIGTERM during a command; a closed stdout.

Run it alone: ``python -m benchmarks.attack --only osc [--quick]`` (``--quick`` sends 2,000 fuzz
datagrams instead of 20,000).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.attack.common import ROOT, AreaResult, check_refused, cpu_s, rss_mb, scorebridge
from benchmarks.attack.osc_client import ANSWER_LIMIT_S, Surface, message, nested

sys.path.insert(0, str(ROOT))

from tests.jackutil import start_jack  # noqa: E402
from tests.peer import Bridge  # noqa: E402

# Fuzz datagrams sent in one burst (full run; --quick sends a tenth).
FUZZ_DATAGRAMS = 20_000
# The bridge must answer status within ANSWER_LIMIT_S after any probe (after the fuzz flood,
# which it handles first, FLOOD_ANSWER_LIMIT_S).
FLOOD_ANSWER_LIMIT_S = 15.0
# CPU seconds the bridge may burn in one wall second while idle after a probe (a spinning
# parser burns a whole core).
IDLE_CPU_SHARE = 0.5
# Memory the bridge may grow during the file probes before it counts as a leak.
FILE_RSS_GROWTH_MB = 100
# Feedback messages the bridge may send in one second to 32 subscribers under repeated dumps.
FEEDBACK_LIMIT_PER_S = 3000
# OSC messages a bridge subscribed to itself may handle in a second after one dump.
LOOP_LIMIT = 100
# What serve may write to stderr after the malformed-packet probes (a log flood fills the pipe).
STDERR_LIMIT_BYTES = 200_000
SECRET = "sb-attack-secret-5d1e"
TOKEN = "sb-attack-token-" + "7" * 16

KILLERS = {
    "address not UTF-8": b"/\xff\x00\x00",
    "bundle element of size -4": b"#bundle\x00" + bytes(8) + b"\xff\xff\xff\xfc",
    "blob of size -1": b"/scorebridge/rule/velocity\x00\x00,b\x00\x00\xff\xff\xff\xff",
    "blob of size 2^31-1": b"/scorebridge/rule/velocity\x00\x00,b\x00\x00\x7f\xff\xff\xff",
    "string without NUL": b"/scorebridge/rule/velocity\x00\x00,s\x00\x00abcd",
}
VALUES = [
    ("/scorebridge/transport/locate", float("inf")), ("/scorebridge/transport/locate", 1e300),
    ("/scorebridge/transport/locate", float("nan")), ("/scorebridge/transport/playing", float("nan")),
    ("/scorebridge/transport/tempo", float("nan")), ("/scorebridge/transport/tempo", float("inf")),
    ("/scorebridge/rule/enabled", "x"), ("/scorebridge/rule/velocity", float("nan")),
    ("/scorebridge/rule/velocity", float("inf")), ("/scorebridge/affect/valence", float("nan")),
    ("/scorebridge/subscribe", float("inf")), ("/scorebridge/subscribe", "x", "y"),
]


def _stop(result: AreaResult, probe: str, bridge: Bridge) -> tuple[str, str]:
    """SIGTERM the bridge (stdout and stderr are read concurrently, so a log flood cannot
    block it); a traceback is a crash, a slow stop a hang."""
    if bridge.proc.poll() is None:
        bridge.proc.send_signal(signal.SIGTERM)
    try:
        out, err = bridge.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        bridge.proc.kill()
        out, err = bridge.proc.communicate()
        result.add("hang", probe, "serve still running 20 s after SIGTERM")
    if "Traceback (most recent call last)" in err:
        result.add("crash", probe, err.strip().splitlines()[-1][:200])
    return out, err


@contextmanager
def _server(workdir: Path, phase: str) -> Iterator[None]:
    name = f"sbattackosc{os.getpid()}{phase}"
    proc = start_jack(name, log_path=str(workdir / f"jackd-{phase}.log"))
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old


def _answers(result: AreaResult, probe: str, surface: Surface, bridge: Bridge,
             limit_s: float = ANSWER_LIMIT_S) -> dict | None:
    """Status after a probe: no answer is a crash (OSC disabled), a busy idle process a hang."""
    surface.skipped.clear()
    # UDP: a request sent while the bridge's receive buffer is still full of a flood is dropped
    # by the kernel (and counted in osc.kernel_dropped); a client asks again, as this one does.
    deadline = time.monotonic() + limit_s
    report = None
    while report is None and time.monotonic() < deadline:
        report = surface.status(min(ANSWER_LIMIT_S, max(0.1, deadline - time.monotonic())))
    if bridge.proc.poll() is not None:
        result.add("crash", probe, f"serve exited {bridge.proc.returncode}")
        return None
    if report is None:
        result.add("crash", probe, f"OSC status unanswered within {limit_s} s: the receive loop is dead or "
                   f"stuck (other replies meanwhile: {dict(surface.skipped.most_common(3))})")
        return None
    before = cpu_s(bridge.proc.pid)
    time.sleep(1.0)
    if cpu_s(bridge.proc.pid) - before > IDLE_CPU_SHARE:
        result.add("hang", probe, "serve burns a core while idle after the probe")
    handler_errors = report.get("osc", {}).get("handler_errors", 0)
    if handler_errors:
        result.add("crash", probe, f"{handler_errors} OSC handler errors (exceptions in the receive path)")
    return report


# -- live probes ---------------------------------------------------------------------------------
def _datagrams(result: AreaResult, bridge: Bridge, surface: Surface, quick: bool) -> None:
    for name, datagram in [*KILLERS.items(), ("bundles 400 deep", nested(400)),
                           ("bundles 3000 deep", nested(3000))]:
        result.probes += 1
        surface.send(datagram)
        if _answers(result, f"datagram: {name}", surface, bridge) is None:
            return
    rng = random.Random(14)
    templates = [message(address, *args) for address, *args in VALUES] + [message("/scorebridge/dump")]
    count = FUZZ_DATAGRAMS // 10 if quick else FUZZ_DATAGRAMS
    for _ in range(count):
        choice = rng.random()
        if choice < 0.3:
            datagram = rng.randbytes(rng.randrange(0, 120))
        else:
            datagram = bytearray(rng.choice(templates))
            for _ in range(rng.randrange(1, 4)):
                position = rng.randrange(len(datagram))
                datagram[position] = rng.randrange(256)
            if choice < 0.5:
                del datagram[rng.randrange(len(datagram)):]
        surface.send(bytes(datagram))
    result.probes += 1
    _answers(result, f"fuzz flood of {count} datagrams", surface, bridge, FLOOD_ANSWER_LIMIT_S)


def _values(result: AreaResult, bridge: Bridge, surface: Surface) -> None:
    # The fuzz flood before may have sent valid values (a mutated NaN is often a finite number):
    # a known state first, so that a change below is the probe's doing.
    surface.ask("/scorebridge/transport/playing", 0)
    surface.ask("/scorebridge/rule/enabled", 1)
    for address, *args in VALUES:
        result.probes += 1
        probe = f"{address} {' '.join(map(str, args))}"
        reply = surface.ask(address, *args)
        if reply is None or reply[0] != "/scorebridge/error":
            result.add("crash", probe, f"accepted without an error reply (reply: {reply})")
    report = _answers(result, "non-finite values", surface, bridge)
    if report is not None:
        if report["transport"]["playing"]:
            result.add("crash", "/scorebridge/transport/playing nan", "started the transport")
        if not report["engines"]["rule"]["enabled"]:
            result.add("crash", "/scorebridge/rule/enabled x", "disabled the slot")


def _engine_import(result: AreaResult, bridge: Bridge, surface: Surface, marker: Path) -> None:
    for name in ("sb_attack_side_effect:X", "sb_attack_side_effect", "this:X"):
        result.probes += 1
        reply = surface.ask("/scorebridge/rule/engine", name)
        time.sleep(0.2)
        if marker.exists():
            result.add("security", f"/scorebridge/rule/engine {name}", "the module's top-level code ran")
            marker.unlink()
        elif reply is None or reply[0] != "/scorebridge/error":
            result.add("crash", f"/scorebridge/rule/engine {name}", f"no error reply ({reply})")
    _answers(result, "engine swaps", surface, bridge)


def _files(result: AreaResult, bridge: Bridge, surface: Surface, allowed: Path, outside: Path) -> None:
    os.mkfifo(allowed / "fifo.csv")
    (allowed / "passwd.csv").symlink_to("/etc/passwd")
    (allowed / "environ.csv").symlink_to("/proc/self/environ")
    with open(allowed / "huge.csv", "wb") as handle:
        handle.truncate(200 * 1024 * 1024)
    rss = rss_mb(bridge.proc.pid)
    for path in ("/proc/self/environ", "/proc/self/cmdline", "/etc/passwd", "/dev/zero",
                 str(allowed / "fifo.csv"), str(allowed / "passwd.csv"), str(allowed / "environ.csv"),
                 str(allowed / "huge.csv"), str(outside)):
        result.probes += 1
        probe = f"/scorebridge/va/curve {path}"
        reply = surface.ask("/scorebridge/va/curve", path)
        time.sleep(0.5)
        report = surface.status()
        if report is None:
            result.add("hang", probe, "status unanswered after the file was named")
            return
        text = json.dumps(report)
        if SECRET in text or "root:x" in text or TOKEN in text:
            result.add("security", probe, "the file's content appears in status")
        va = report["engines"]["va"]
        if reply is None or reply[0] != "/scorebridge/error":
            result.add("security", probe, f"accepted (curve now {va['values'].get('curve')!r})")
        if va.get("queued", 0) > 0 and va["engine_status"].get("samples", 0) == 0:
            result.add("hang", probe, f"the va slot holds {va['queued']} unprocessed events "
                       "(blocked reading)")
        if rss_mb(bridge.proc.pid) - rss > FILE_RSS_GROWTH_MB:
            result.add("leak", probe, f"serve grew from {rss:.0f} to {rss_mb(bridge.proc.pid):.0f} MB")
            return
        if va["values"].get("curve") != "none":  # accepted: put it back for the next probe
            surface.send(message("/scorebridge/va/curve", "none"))
    _answers(result, "file parameters", surface, bridge)


def _loops(result: AreaResult, bridge: Bridge, surface: Surface) -> None:
    for args in ((bridge.osc_port,), ("127.0.0.1", bridge.osc_port), ("localhost", bridge.osc_port)):
        result.probes += 1
        reply = surface.ask("/scorebridge/subscribe", *args)
        if reply is None or reply[0] != "/scorebridge/error":
            result.add("security", f"/scorebridge/subscribe {' '.join(map(str, args))}",
                       "the bridge subscribed to itself")
    before = (surface.status() or {}).get("osc", {}).get("handled", 0)
    surface.send(message("/scorebridge/dump"))
    time.sleep(1.0)
    report = surface.status() or {}
    handled = report.get("osc", {}).get("handled", 0) - before
    result.probes += 1
    if handled > LOOP_LIMIT:
        result.add("security", "/scorebridge/dump while subscribed to itself",
                   f"{handled} messages handled in a second: a feedback loop")
    for args in (("10.20.30.40", 9000), ("127.0.0.1", bridge.osc_port)):
        result.probes += 1
        reply = surface.ask("/scorebridge/status", *args)
        if reply is None or reply[0] != "/scorebridge/error":
            result.add("security", f"/scorebridge/status {args[0]} {args[1]}", "status sent to a target "
                       "outside the allow-list or to the bridge itself")
    for args in ((bridge.osc_port,), ("127.0.0.1", bridge.osc_port), ("localhost", bridge.osc_port)):
        surface.send(message("/scorebridge/unsubscribe", *args))
    _answers(result, "feedback loops", surface, bridge)


def _feedback_rate(result: AreaResult, bridge: Bridge, surface: Surface) -> None:
    listeners = []
    try:
        for _ in range(32):
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            listener.bind(("127.0.0.1", 0))
            listener.setblocking(False)
            listeners.append(listener)
            surface.send(message("/scorebridge/subscribe", listener.getsockname()[1]))
        time.sleep(0.2)
        received, started = 0, time.monotonic()
        while time.monotonic() - started < 1.0:
            surface.send(message("/scorebridge/dump"))
            time.sleep(0.01)
            for listener in listeners:
                while True:
                    try:
                        listener.recv(65536)
                    except BlockingIOError:
                        break
                    received += 1
        result.probes += 1
        if received > FEEDBACK_LIMIT_PER_S:
            result.add("security", "32 subscribers and /scorebridge/dump every 10 ms",
                       f"{received} feedback messages in one second (no overall rate limit)")
    finally:
        for listener in listeners:
            surface.send(message("/scorebridge/unsubscribe", listener.getsockname()[1]))
            listener.close()


def _token(result: AreaResult, workdir: Path) -> None:
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    common = ("--web-port", "0", "--web-allow-remote")
    try:
        bridge = Bridge(f"sbattackosc{os.getpid()}t", *common, "--web-token-file", str(token_file))
        probe = "--web-token-file"
    except RuntimeError:  # a bridge without --web-token-file: the token goes on the command line
        bridge = Bridge(f"sbattackosc{os.getpid()}u", *common, "--web-token", TOKEN)
        probe = "--web-token"
    result.probes += 1
    surface = Surface(bridge.osc_port)
    try:
        report = surface.status()
        if report is not None and TOKEN in json.dumps(report):
            result.add("security", f"{probe}: OSC status", "the web token is in the status reply")
        if TOKEN in Path(f"/proc/{bridge.proc.pid}/cmdline").read_text(errors="replace"):
            result.add("security", f"{probe}: ps", "the web token is visible in the process list")
    finally:
        surface.close()
        out, err = _stop(result, probe, bridge)
    if TOKEN in bridge.online_line + out + err:
        result.add("security", f"{probe}: output", "the web token is printed or logged")


def _live(result: AreaResult, workdir: Path, quick: bool) -> None:
    allowed = workdir / "curves"
    allowed.mkdir()
    outside = workdir / "outside.csv"
    outside.write_text("time_s,valence,arousal\n0,0,0\n")
    modules = workdir / "modules"
    modules.mkdir()
    marker = workdir / "imported"
    (modules / "sb_attack_side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass X:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{modules}{os.pathsep}{ROOT}", "SB_ATTACK_SECRET": SECRET}
    slots = ("--no-web", "--clock", "external", "--slot", "rule=rule@all/2", "--slot", "va=va@all/3")
    try:
        bridge = Bridge(f"sbattackosc{os.getpid()}", *slots, "--allow-dir", str(allowed), env=env)
    except RuntimeError:  # a bridge without --allow-dir
        bridge = Bridge(f"sbattackosc{os.getpid()}o", *slots, env=env)
    surface = Surface(bridge.osc_port)
    attacks: list[tuple[str, Callable[[], None]]] = [
        ("datagrams", lambda: _datagrams(result, bridge, surface, quick)),
        ("values", lambda: _values(result, bridge, surface)),
        ("engine import", lambda: _engine_import(result, bridge, surface, marker)),
        ("file parameters", lambda: _files(result, bridge, surface, allowed, outside)),
        ("feedback loops", lambda: _loops(result, bridge, surface)),
        ("feedback rate", lambda: _feedback_rate(result, bridge, surface)),
    ]
    try:
        for name, attack in attacks:
            if bridge.proc.poll() is not None:
                result.add("crash", name, f"serve had exited ({bridge.proc.returncode})")
                break
            try:
                attack()
            except (OSError, KeyError, ValueError, TypeError) as exc:
                result.add("crash", name, f"{type(exc).__name__}: {str(exc)[-200:]}")
    finally:
        surface.close()
        _, err = _stop(result, "serve after the OSC probes", bridge)
    if len(err.encode()) > STDERR_LIMIT_BYTES:
        result.add("leak", "serve's log", f"{len(err.encode())} bytes written to stderr by the probes")
    if SECRET in err or "root:x" in err:
        result.add("security", "serve's log", "file content in the log")


# -- command line --------------------------------------------------------------------------------
def _options(result: AreaResult, workdir: Path) -> None:
    for option in (("--osc-port", "70000"), ("--osc-port", "-1"), ("--tempo", "-5"), ("--tempo", "nan"),
                   ("--tempo", "inf"), ("--web-port", "-1"), ("--web-port", "70000")):
        outcome = scorebridge("serve", "--backend", "jack", "--osc-port", "0", "--duration", "2", *option,
                              timeout_s=20)
        check_refused(result, f"serve {' '.join(option)}", outcome)
    configs = ("[clock]\ntempo_bpm = nan\n", "[osc]\nport = 70000\n", "[web]\nport = -1\n",
               "[clock]\ntempo_bpm = \"fast\"\n", "midi = 3\n")
    for number, text in enumerate(configs):
        config = workdir / f"bad{number}.toml"
        config.write_text(text)
        outcome = scorebridge("serve", "--backend", "jack", "--osc-port", "0", "--no-web", "--duration", "2",
                              "--config", str(config), timeout_s=20)
        check_refused(result, f"serve --config with {text.strip()!r}", outcome)


def _signals_and_pipes(result: AreaResult) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        command = [sys.executable, "-m", "bridge", "status", "--osc-port", str(silent.getsockname()[1])]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        silent.settimeout(15)
        try:
            silent.recvfrom(65536)
        except TimeoutError:
            pass
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    result.probes += 1
    if "Traceback" in err or proc.returncode != 128 + signal.SIGTERM:
        traceback = ", traceback" if "Traceback" in err else ""
        result.add("crash", "SIGTERM during `scorebridge status`",
                   f"exit {proc.returncode}{traceback} (expected 143, a message)")
    for args in (["engines"], ["--help"]):
        proc = subprocess.Popen([sys.executable, "-m", "bridge", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        proc.stdout.close()
        with proc.stderr:
            err = proc.stderr.read().decode(errors="replace")
        proc.wait(timeout=20)
        result.probes += 1
        if "Traceback" in err or "BrokenPipeError" in err:
            result.add("crash", f"scorebridge {' '.join(args)} | (closed)", "traceback on a closed stdout")


def run(workdir: Path, quick: bool) -> AreaResult:
    result = AreaResult("osc")
    # A JACK server of its own for each phase: one that dies under a probe cannot hide the next.
    for phase, attack in (("live", lambda: _live(result, workdir, quick)),
                          ("token", lambda: _token(result, workdir)),
                          ("options", lambda: _options(result, workdir))):
        try:
            with _server(workdir, phase):
                attack()
        except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
            result.add("crash", phase, f"{type(exc).__name__}: {str(exc)[-200:]}")
    try:
        _signals_and_pipes(result)
    except (OSError, subprocess.SubprocessError) as exc:
        result.add("crash", "signals and pipes", f"{type(exc).__name__}: {str(exc)[-200:]}")
    return result
