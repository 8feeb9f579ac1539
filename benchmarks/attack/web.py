"""Attack area ``web``: hostile control maps (``maps check``, ``serve --map``, ``serve --learn-map``)
and hostile HTTP requests and WebSocket traffic against a real ``serve`` on a private JACK server
(dummy driver), loopback only.

Every probe checks that the bridge refuses cleanly (an HTTP status, an error reply or a close
code, never a traceback in its log), stays up, answers other clients afterwards, gives back its
file descriptors and memory, and never writes its web token to the log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.attack.common import ROOT, AreaResult, check_refused, rss_mb, scorebridge
from benchmarks.attack.ws_client import RawClient, connect, frame, read_until_closed, request, upgrade

sys.path.insert(0, str(ROOT))

from tests.jackutil import start_jack  # noqa: E402

TOKEN = "attackTokenQ9x7"
_STATIC_BODIES: set[bytes] = {(ROOT / "bridge" / "web" / "static" / name).read_bytes()
                              for name in ("index.html", "app.js", "style.css")}
_MAP_HEADER = '[map]\nname = "hostile"\n\n[[bind]]\ncc = 1\ntarget = "rule/velocity"\n'
# Growth of the bridge's open files / memory that counts as a leak after an attack is over.
_FD_SLACK = 16
_RSS_SLACK_MB = 60.0


# -- hostile maps -----------------------------------------------------------------------------
def _hostile_maps(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    texts = {
        "deep-array": _MAP_HEADER + "values = " + "[" * 5000 + "]" * 5000 + "\n",
        "deep-inline-table": _MAP_HEADER + "label = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
        "inf-input-range": '[[bind]]\nosc = "/a"\ntarget = "rule/velocity"\nin_min = -inf\nin_max = inf\n',
        "nan-min": '[[bind]]\ncc = 1\ntarget = "rule/low_note"\nmin = nan\n',
        "huge-int-value": '[[bind]]\nnote = 1\ntarget = "rule/velocity"\nscale = "fixed"\nvalue = ' + "9" * 400 + "\n",
        "nested-values": '[[bind]]\ncc = 1\ntarget = "rule/key"\nvalues = [[1], {a = 2}]\n',
        "too-many-bindings": "".join(f'[[bind]]\ncc = {n % 128}\nchannel = {n % 16 + 1}\ntarget = "rule/velocity"\n'
                                     for n in range(6000)),
        "too-large": _MAP_HEADER + "#" * (2 * 1024 * 1024) + "\n",
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.toml"
        paths[name].write_text(text, encoding="utf-8")
    paths["not-utf8"] = folder / "not-utf8.toml"
    paths["not-utf8"].write_bytes(_MAP_HEADER.encode() + b'label = "\xff\xfe"\n')
    paths["binary"] = folder / "binary.toml"
    paths["binary"].write_bytes(bytes(range(256)) * 64)
    paths["fifo"] = folder / "fifo.toml"
    os.mkfifo(paths["fifo"])
    paths["directory"] = folder / "directory.toml"
    paths["directory"].mkdir()
    paths["device"] = Path("/dev/zero")
    return paths


def _attack_maps(result: AreaResult, workdir: Path, quick: bool) -> dict[str, Path]:
    maps = _hostile_maps(workdir / "maps")
    for name, path in maps.items():
        if quick and name in ("binary", "nested-values"):
            continue
        outcome = scorebridge("maps", "check", str(path), "--slot", "rule=rule", timeout_s=30)
        check_refused(result, f"maps check {name}", outcome)
        if outcome.returncode not in (None, 0) and not outcome.traceback and outcome.stderr.count("\n") > 1:
            result.add("crash", f"maps check {name}", "more than one line of error: "
                       + outcome.stderr.strip().splitlines()[-1][:120])
    return maps



class _Serve:
    """``python -m bridge serve`` with its output in files (never a full pipe)."""

    def __init__(self, workdir: Path, jack: str, name: str, *args: str, verbose: bool = False) -> None:
        self.out_path, self.err_path = workdir / f"{name}.out", workdir / f"{name}.err"
        config = workdir / "config"
        config.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JACK_DEFAULT_SERVER": jack, "XDG_CONFIG_HOME": str(config)}
        command = [sys.executable, "-m", "bridge", *(["-v"] if verbose else []), "serve", "--backend", "jack",
                   "--client", f"{jack}{name}", "--osc-port", "0", *args]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=workdir)
        self.online = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.online = next((line for line in self.out_path.read_text().splitlines() if "online" in line), "")
            if self.online:
                break
            time.sleep(0.1)
        found = re.search(r"web http://([\d.]+):(\d+)/", self.online)
        self.port = int(found.group(2)) if found else 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")


# -- the live attacks -------------------------------------------------------------------------
_TRAVERSALS = ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
               "/static/../server.py", "//etc/passwd", "/app.js/../../server.py", "/server.py", "/__init__.py",
               "/index.html%00.py", "/%5c..%5c..%5cetc%5cpasswd", "/.git/config", "/static/app.js")

_BAD_REQUESTS = {
    "long request line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "many headers": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n",
    "huge header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"b" * 200_000 + b"\r\n\r\n",
    "post with body": b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
    "absurd content length": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "binary junk": bytes(range(256)) * 8,
    "http/0.9": b"GET /\r\n\r\n",
    "no host": b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "bad upgrade": b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 99\r\n\r\n",
    "invalid utf-8 path": b"GET /\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "host-like path": b"GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "two hosts": upgrade().replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nHost: evil.example\r\n"),
    "two origins": upgrade(origin="http://127.0.0.1").replace(b"Origin:", b"Origin: http://evil.example\r\nOrigin:"),
}

# Messages the surface must answer with an error while the connection stays open.
_ANSWERED = {
    "deep json": "[" * 5000 + "]" * 5000,
    "deep args": '{"address": "/scorebridge/rule/velocity", "args": ' + "[" * 5000 + "]" * 5000 + "}",
    "deep object": '{"address": "/x", "args": [' + '{"a": ' * 5000 + "1" + "}" * 5000 + "]}",
    "Infinity": '{"address": "/scorebridge/rule/velocity", "args": [Infinity]}',
    "-Infinity": '{"address": "/scorebridge/transport/locate", "args": [-Infinity]}',
    "NaN": '{"address": "/scorebridge/transport/tempo", "args": [NaN]}',
    "1e400": '{"address": "/scorebridge/transport/locate", "args": [1e400]}',
    "huge int": '{"address": "/scorebridge/rule/velocity", "args": [' + "9" * 4000 + "]}",
    "5000-digit int": '{"address": "/scorebridge/rule/velocity", "args": [' + "9" * 5000 + "]}",
    "args not a list": '{"address": "/scorebridge/rule/velocity", "args": "abc"}',
    "address not a string": '{"address": {"a": 1}, "args": []}',
    "not json": "not json at all",
    "empty": "",
}


def _attack_http(result: AreaResult, serve: _Serve) -> None:
    for path in _TRAVERSALS:
        result.probes += 1
        status, body, _ = request(serve.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 5)
        if status == 200 and body not in _STATIC_BODIES or b"root:" in body:
            result.add("security", f"GET {path}", f"served {len(body)} bytes that are not the page")
    for name, raw in _BAD_REQUESTS.items():
        result.probes += 1
        status, _, closed = request(serve.port, raw, 12.0)
        if not closed:
            result.add("hang", f"http {name}", "connection still open after 12 s")
        if status == 500:
            result.add("crash", f"http {name}", "500 Internal Server Error")
    for name, handshake in (("foreign origin", upgrade(origin="http://evil.example")),
                            ("broken origin", upgrade(origin="http://[")),
                            ("rebinding host", upgrade(host="attacker.example:80"))):
        result.probes += 1
        status, _, _ = request(serve.port, handshake, 5)
        if status == 101:
            result.add("security", f"websocket {name}", "the socket opened")
        elif status != 403:
            result.add("crash", f"websocket {name}", f"answered {status} instead of 403")


def _attack_messages(result: AreaResult, serve: _Serve) -> None:
    client = RawClient(serve.port)
    client.pump(0.5)
    for name, text in _ANSWERED.items():
        result.probes += 1
        client.values.pop("/scorebridge/error", None)
        client.send(text)
        if not client.pump(5.0, until="/scorebridge/error") or "/scorebridge/error" not in client.values:
            result.add("crash", f"message {name}", f"no error reply (close code {client.close_code})")
            client.close()
            client = RawClient(serve.port)
            client.pump(0.3)
        elif not client.answers():
            result.add("crash", f"message {name}", "the connection stopped answering")
            client.close()
            client = RawClient(serve.port)
            client.pump(0.3)
    for name, payload, opcode in (("binary garbage", bytes(range(256)), 2),
                                  ("binary json", b'{"address": "/scorebridge/rule/voices", "args": [9]}', 2)):
        result.probes += 1
        client.values.pop("/scorebridge/error", None)
        client.send(payload, opcode)
        if not client.pump(5.0, until="/scorebridge/error") or not client.answers():
            result.add("crash", f"message {name}", "no error reply, or the connection stopped answering")
            client.close()
            client = RawClient(serve.port)
            client.pump(0.3)
    client.close()
    # Protocol violations: the server may close that connection, never die or hang.
    for name, frames in (("invalid utf-8 text", [frame(b'{"address": "/\xff\xfe"}')]),
                         ("unknown opcode", [frame(b"x", opcode=3)]),
                         ("claimed 2^62 bytes", [frame(b"", claimed=2**62)]),
                         ("unfinished fragments", [frame(b"[" * 1000, fin=False)] * 100),
                         ("10 MB message", [frame(b'"' + b"a" * 10_000_000 + b'"')])):
        result.probes += 1
        victim = RawClient(serve.port)
        try:
            for raw in frames:
                victim.sock.sendall(raw)
        except OSError:
            pass  # closed while we were still sending: the right answer to a huge message
        if victim.pump(6.0):
            result.add("hang", f"frame {name}", "connection not closed after 6 s")
        victim.close()


def _attack_load(result: AreaResult, serve: _Serve, quick: bool) -> None:
    fds, rss = serve.fds(), serve.rss_mb()
    probe = RawClient(serve.port)
    probe.pump(0.3)
    # A flood of messages from one client: another client must still get its replies.
    result.probes += 1
    flooder = RawClient(serve.port)
    message = frame(json.dumps({"address": "/scorebridge/rule/velocity", "args": [64]}).encode())
    started = time.monotonic()
    try:
        flooder.sock.settimeout(10)
        for _ in range(4 if quick else 20):
            flooder.sock.sendall(message * 1000)
    except OSError:
        pass
    if not probe.answers():
        result.add("hang", "flood of 20,000 messages", "another client got no reply within 5 s")
    flooder.close()
    result.probes += 1
    if time.monotonic() - started > 30:
        result.add("hang", "flood of messages", f"took {time.monotonic() - started:.0f} s")
    # A client that never reads while values change.
    result.probes += 1
    stuck = RawClient(serve.port, receive_buffer=4096)
    for value in range(200):
        probe.send(json.dumps({"address": "/scorebridge/rule/velocity", "args": [1 + value % 120]}))
    if not probe.answers():
        result.add("hang", "a client that never reads", "another client got no reply within 5 s")
    stuck.close()
    # Many TCP connections that never send a byte, then many WebSockets.
    result.probes += 1
    idle = []
    for _ in range(100 if quick else 300):
        try:
            idle.append(connect(serve.port))
        except OSError:
            break
    time.sleep(0.5)
    held = serve.fds() - fds
    if held > 100:
        result.add("leak", f"{len(idle)} idle connections", f"the bridge holds {held} more file descriptors")
    for sock in idle:
        sock.close()
    result.probes += 1
    sockets, statuses = [], []
    for _ in range(60 if quick else 100):
        client = RawClient(serve.port)
        statuses.append(client.status)
        sockets.append(client)
    if statuses.count(101) > 50:
        result.add("leak", "100 websockets", f"{statuses.count(101)} were opened (no limit)")
    for client in sockets:
        client.close()
    # Slowloris: requests that never end must be closed by the server.
    result.probes += 1
    slow = [connect(serve.port) for _ in range(5 if quick else 20)]
    for sock in slow:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    deadline, still_open = time.monotonic() + 8, list(slow)
    while still_open and time.monotonic() < deadline:
        for sock in list(still_open):
            try:
                sock.sendall(b"X")
            except OSError:
                still_open.remove(sock)
                continue
            if read_until_closed(sock, 0.05)[1]:
                still_open.remove(sock)
        time.sleep(0.5)
    if still_open:
        result.add("hang", "slowloris", f"{len(still_open)} unfinished requests still open after 8 s")
    for sock in slow:
        sock.close()
    time.sleep(1.0)
    result.probes += 1
    if not probe.answers():
        probe.close()
        probe = RawClient(serve.port)
        probe.pump(0.3)
        if not probe.answers():
            result.add("crash", "after the load", "a new browser gets no answer")
    probe.close()
    time.sleep(0.5)
    result.probes += 1
    if serve.fds() > fds + _FD_SLACK:
        result.add("leak", "after the load", f"{serve.fds() - fds} file descriptors not given back")
    if serve.rss_mb() > rss + _RSS_SLACK_MB:
        result.add("leak", "after the load", f"memory grew from {rss:.0f} to {serve.rss_mb():.0f} MB")


def _attack_token(result: AreaResult, workdir: Path, jack: str) -> None:
    serve = _Serve(workdir, jack, "token", "--web-port", "0", "--web-allow-remote", "--web-token", TOKEN,
                   "--web-host", "127.0.0.1", verbose=True)
    if not serve.port:
        result.add("crash", "serve --web-allow-remote", "did not come online: " + serve.log()[-200:])
        serve.stop()
        return
    for name, path in (("no token", "/ws"), ("wrong token", "/ws?token=guess"),
                       ("token prefix", f"/ws?token={TOKEN[:-1]}"), ("token in another key", f"/ws?x={TOKEN}")):
        result.probes += 1
        status, body, _ = request(serve.port, upgrade(path), 5)
        if status == 101:
            result.add("security", f"token: {name}", "the socket opened")
        if TOKEN.encode() in body:
            result.add("security", f"token: {name}", "the refusal shows the token")
    result.probes += 1
    good = RawClient(serve.port, f"/ws?token={TOKEN}")
    if good.status != 101 or not good.answers():
        result.add("crash", "token: right token", f"refused ({good.status})")
    good.close()
    _stop(result, serve, "serve --web-allow-remote")
    result.probes += 1
    if TOKEN in serve.log():
        line = next(line for line in serve.log().splitlines() if TOKEN in line)
        result.add("security", "token in the log", line.replace(TOKEN, "<TOKEN>")[:160])


def _stop(result: AreaResult, serve: _Serve, probe: str) -> None:
    result.probes += 1
    code = serve.stop()
    log = serve.log()
    if code is None:
        result.add("hang", probe, "did not stop within 15 s of SIGTERM")
    elif code != 0:
        result.add("crash", probe, f"exit {code} after SIGTERM")
    for marker in ("Traceback (most recent call last)", "connection handler failed", "process_request failed",
                   "opening handshake failed", "unexpected internal error"):
        if marker in log:
            line = next(line for line in log.splitlines() if marker in line)
            result.add("crash", probe, f"log: {line.strip()[:160]}")
            break


def _attack_serve_maps(result: AreaResult, workdir: Path, jack: str, maps: dict[str, Path]) -> None:
    env = {"JACK_DEFAULT_SERVER": jack, "XDG_CONFIG_HOME": str(workdir / "config")}
    for option, name in (("--map", "deep-array"), ("--map", "fifo"), ("--learn-map", "deep-array"),
                         ("--learn-map", "fifo"), ("--learn-map", "not-utf8"), ("--learn-map", "too-large")):
        outcome = scorebridge("serve", "--backend", "jack", "--client", f"{jack}maps", "--osc-port", "0",
                              "--no-web", option, str(maps[name]), cwd=workdir, timeout_s=20, env=env)
        check_refused(result, f"serve {option} {name}", outcome)


def run(workdir: Path, quick: bool) -> AreaResult:
    result = AreaResult("web")
    maps = _attack_maps(result, workdir, quick)
    jack = f"sbweb{os.getpid()}"
    try:
        jackd = start_jack(jack, period_frames=256)
    except RuntimeError as exc:
        result.add("crash", "jackd -d dummy", f"could not start a private JACK server ({exc}): the live attacks "
                   "did not run")
        return result
    try:
        _attack_serve_maps(result, workdir, jack, maps)
        serve = _Serve(workdir, jack, "web", "--web-port", "0", "--map", "browser")
        if not serve.port:
            result.add("crash", "serve --web-port 0", "did not come online: " + serve.log()[-200:])
            serve.stop()
            return result
        try:
            _attack_http(result, serve)
            _attack_messages(result, serve)
            _attack_load(result, serve, quick)
            result.probes += 1
            if not serve.alive():
                result.add("crash", "serve", f"exited with {serve.proc.returncode} during the attack")
        finally:
            _stop(result, serve, "serve (after the attack)")
        _attack_token(result, workdir, jack)
    finally:
        jackd.terminate()
        jackd.wait(timeout=10)
    return result
