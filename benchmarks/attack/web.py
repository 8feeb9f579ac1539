"""Attack area ``web``: hostile control maps (``maps check``, ``serve --map``, ``serve --learn-map``)
and hostile HTTP requests and WebSocket traffic against a real ``serve`` on a private JACK server
(dummy driver), loopback only.

Every probe checks that the bridge refuses cleanly (an HTTP status, an error reply or a close
code, never a traceback in its log), stays up, answers other clients afterwards, gives back its
file descriptors and memory, and never writes its web token to the log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.attack.common import ROOT, AreaResult, check_refused, scorebridge

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


# -- a private JACK server and a serve on it --------------------------------------------------
def _start_jack(name: str) -> subprocess.Popen[bytes] | None:
    if shutil.which("jackd") is None:
        return None
    proc = subprocess.Popen(["jackd", "-n", name, "-R", "-d", "dummy", "-r", "48000", "-p", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "JACK_DEFAULT_SERVER": name}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True, check=False).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    return None


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
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else 0.0

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


# -- raw HTTP and WebSocket -------------------------------------------------------------------
def _socket(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server sends within ``seconds``, and whether it closed the connection."""
    data, deadline = b"", time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _request(port: int, raw: bytes, seconds: float = 12.0) -> tuple[int | None, bytes, bool]:
    """Send raw HTTP; (status or None, body, closed within ``seconds``)."""
    sock = _socket(port)
    try:
        sock.sendall(raw)
    except OSError:
        return None, b"", True
    data, closed = _read_until_closed(sock, seconds)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(found.group(1)) if found else None), body, closed


def _upgrade(path: str = "/ws", host: str = "127.0.0.1", origin: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Origin: {origin}\r\n" if origin is not None else "") + "\r\n").encode()


def _frame(payload: bytes, opcode: int = 1, fin: bool = True, claimed: int | None = None) -> bytes:
    """A masked client frame; ``claimed`` overrides the length field (a lie about the size)."""
    length = len(payload) if claimed is None else claimed
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _RawClient:
    """A WebSocket client on a plain socket, so frames can be anything."""

    def __init__(self, port: int, path: str = "/ws", receive_buffer: int | None = None) -> None:
        self.sock = _socket(port, receive_buffer)
        self.buffer = b""
        try:
            self.sock.sendall(_upgrade(path))
            while b"\r\n\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                self.buffer += chunk
        except OSError:  # reset or timed out: refused (status 0)
            self.buffer = b""
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
        self.values: dict[str, Any] = {}
        self.close_code: int | None = None

    def send(self, payload: bytes | str, opcode: int = 1, **kwargs: Any) -> bool:
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            self.sock.sendall(_frame(data, opcode, **kwargs))
            return True
        except OSError:
            return False

    def pump(self, seconds: float, until: str | None = None) -> bool:
        """Read frames for ``seconds``; False once the server has closed the connection."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.1)
        while time.monotonic() < deadline:
            if until is not None and until in self.values:
                return True
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
            while self._one_frame():
                pass
            if self.close_code is not None:
                return False
        return True

    def _one_frame(self) -> bool:
        if len(self.buffer) < 2:
            return False
        opcode, length, at = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if length == 126:
            length, at = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            length, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
        if len(self.buffer) < at + length:
            return False
        payload, self.buffer = self.buffer[at:at + length], self.buffer[at + length:]
        if opcode == 1:
            for address, args in json.loads(payload):
                self.values[address] = args
        elif opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        elif opcode == 9:
            self.send(payload, opcode=10)  # answer pings like a browser
        return True

    def answers(self) -> bool:
        """A valid message still gets its reply (voices 9 is out of range: an error comes back)."""
        self.values.pop("/scorebridge/error", None)
        self.send(json.dumps({"address": "/scorebridge/rule/voices", "args": [9]}))
        return self.pump(5.0, until="/scorebridge/error") and "outside" in str(self.values.get("/scorebridge/error"))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


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
    "two hosts": _upgrade().replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nHost: evil.example\r\n"),
    "two origins": _upgrade(origin="http://127.0.0.1").replace(b"Origin:", b"Origin: http://evil.example\r\nOrigin:"),
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
        status, body, _ = _request(serve.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), 5)
        if status == 200 and body not in _STATIC_BODIES or b"root:" in body:
            result.add("security", f"GET {path}", f"served {len(body)} bytes that are not the page")
    for name, raw in _BAD_REQUESTS.items():
        result.probes += 1
        status, _, closed = _request(serve.port, raw, 12.0)
        if not closed:
            result.add("hang", f"http {name}", "connection still open after 12 s")
        if status == 500:
            result.add("crash", f"http {name}", "500 Internal Server Error")
    for name, upgrade in (("foreign origin", _upgrade(origin="http://evil.example")),
                          ("broken origin", _upgrade(origin="http://[")),
                          ("rebinding host", _upgrade(host="attacker.example:80"))):
        result.probes += 1
        status, _, _ = _request(serve.port, upgrade, 5)
        if status == 101:
            result.add("security", f"websocket {name}", "the socket opened")
        elif status != 403:
            result.add("crash", f"websocket {name}", f"answered {status} instead of 403")


def _attack_messages(result: AreaResult, serve: _Serve) -> None:
    client = _RawClient(serve.port)
    client.pump(0.5)
    for name, text in _ANSWERED.items():
        result.probes += 1
        client.values.pop("/scorebridge/error", None)
        client.send(text)
        if not client.pump(5.0, until="/scorebridge/error") or "/scorebridge/error" not in client.values:
            result.add("crash", f"message {name}", f"no error reply (close code {client.close_code})")
            client.close()
            client = _RawClient(serve.port)
            client.pump(0.3)
        elif not client.answers():
            result.add("crash", f"message {name}", "the connection stopped answering")
            client.close()
            client = _RawClient(serve.port)
            client.pump(0.3)
    for name, payload, opcode in (("binary garbage", bytes(range(256)), 2),
                                  ("binary json", b'{"address": "/scorebridge/rule/voices", "args": [9]}', 2)):
        result.probes += 1
        client.values.pop("/scorebridge/error", None)
        client.send(payload, opcode)
        if not client.pump(5.0, until="/scorebridge/error") or not client.answers():
            result.add("crash", f"message {name}", "no error reply, or the connection stopped answering")
            client.close()
            client = _RawClient(serve.port)
            client.pump(0.3)
    client.close()
    # Protocol violations: the server may close that connection, never die or hang.
    for name, frames in (("invalid utf-8 text", [_frame(b'{"address": "/\xff\xfe"}')]),
                         ("unknown opcode", [_frame(b"x", opcode=3)]),
                         ("claimed 2^62 bytes", [_frame(b"", claimed=2**62)]),
                         ("unfinished fragments", [_frame(b"[" * 1000, fin=False)] * 100),
                         ("10 MB message", [_frame(b'"' + b"a" * 10_000_000 + b'"')])):
        result.probes += 1
        victim = _RawClient(serve.port)
        try:
            for frame in frames:
                victim.sock.sendall(frame)
        except OSError:
            pass  # closed while we were still sending: the right answer to a huge message
        if victim.pump(6.0):
            result.add("hang", f"frame {name}", "connection not closed after 6 s")
        victim.close()


def _attack_load(result: AreaResult, serve: _Serve, quick: bool) -> None:
    fds, rss = serve.fds(), serve.rss_mb()
    probe = _RawClient(serve.port)
    probe.pump(0.3)
    # A flood of messages from one client: another client must still get its replies.
    result.probes += 1
    flooder = _RawClient(serve.port)
    message = _frame(json.dumps({"address": "/scorebridge/rule/velocity", "args": [64]}).encode())
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
    stuck = _RawClient(serve.port, receive_buffer=4096)
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
            idle.append(_socket(serve.port))
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
        client = _RawClient(serve.port)
        statuses.append(client.status)
        sockets.append(client)
    if statuses.count(101) > 50:
        result.add("leak", "100 websockets", f"{statuses.count(101)} were opened (no limit)")
    for client in sockets:
        client.close()
    # Slowloris: requests that never end must be closed by the server.
    result.probes += 1
    slow = [_socket(serve.port) for _ in range(5 if quick else 20)]
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
            if _read_until_closed(sock, 0.05)[1]:
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
        probe = _RawClient(serve.port)
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
        status, body, _ = _request(serve.port, _upgrade(path), 5)
        if status == 101:
            result.add("security", f"token: {name}", "the socket opened")
        if TOKEN.encode() in body:
            result.add("security", f"token: {name}", "the refusal shows the token")
    result.probes += 1
    good = _RawClient(serve.port, f"/ws?token={TOKEN}")
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
    jackd = _start_jack(jack)
    if jackd is None:
        result.add("crash", "jackd -d dummy", "could not start a private JACK server: the live attacks did not run")
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
