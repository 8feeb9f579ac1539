"""Hostile input to the browser surface and to control maps: bad WebSocket messages get an error
reply and the connection stays, one client cannot stop the surface for the others, connections
are capped and logged at DEBUG without the token, the page refuses traversal, foreign origins and
missing tokens, and damaged or hostile maps and learn maps are refused with the file and line.

The surface runs in this process with a stub session (its limits are pure server logic, so no
JACK is needed); the serve tests at the end use the real bridge."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from core.errors import ConfigError, MappingError
from engines import engine_class

ROOT = Path(__file__).resolve().parent.parent
SLOTS = {"rule": engine_class("rule")}
TOKEN = "s3cretTOKENvalue"


# -- an in-process surface ------------------------------------------------------------------
def _surface(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Any:
    """A surface over a stub bridge: dispatch echoes each message back as a reply."""
    from bridge.web import WebSurface

    def dispatch(address: str, args: list[Any], sender: Any, reply: Any) -> None:
        reply("/scorebridge/echo", address, *args)

    return WebSurface(dispatch, lambda: [("/scorebridge/rule/velocity", (72,))], dict, host, port, **kwargs)


@pytest.fixture
def surface():
    started = []

    def start(**kwargs: Any) -> Any:
        web = _surface(**kwargs)
        web.start()
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()


def ws_url(web: Any, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{web.port}/ws" + (f"?token={token}" if token else "")


def replies(ws: Any, seconds: float = 1.0, until: str | None = None) -> dict[str, list[Any]]:
    """Newest args per address received within ``seconds`` (or until ``until`` arrives)."""
    values: dict[str, list[Any]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            batch = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        values.update({address: args for address, args in batch})
        if until is not None and until in values:
            break
    return values


def error_for(ws: Any, raw: str | bytes) -> str:
    ws.send(raw)
    return str(replies(ws, 2.0, until="/scorebridge/error").get("/scorebridge/error", ["<no reply>"])[0])


def still_answers(ws: Any) -> bool:
    ws.send(json.dumps({"address": "/scorebridge/rule/velocity", "args": [50]}))
    return replies(ws, 2.0, until="/scorebridge/echo").get("/scorebridge/echo") == ["/scorebridge/rule/velocity", 50]


def raw_socket(web: Any, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", web.port))
    return sock


def handshake(sock: socket.socket, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    return answer


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (what it sends meanwhile is read)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


# -- messages ---------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ('{"address": "/scorebridge/rule/velocity", "args": [Infinity]}', "finite"),
    ('{"address": "/scorebridge/rule/velocity", "args": [-Infinity]}', "finite"),
    ('{"address": "/scorebridge/rule/velocity", "args": [NaN]}', "finite"),
    ('{"address": "/scorebridge/rule/velocity", "args": [1e400]}', "finite"),
    ('{"address": "/scorebridge/rule/velocity", "args": [' + "9" * 40 + "]}", "64 bits"),
    ('{"address": "/scorebridge/rule/velocity", "args": ' + "[" * 5000 + "]" * 5000 + "}", "nesting too deep"),
    ("[" * 5000 + "]" * 5000, "nesting too deep"),
    ('{"address": "/x", "args": ' + "[" * 20 + "]" * 20 + "}", "nesting too deep"),
    ('{"address": "/x", "args": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}", "nesting too deep"),
    ('{"address": "/x", "args": "abc"}', "args must be a list"),
    ('{"address": ["/x"], "args": []}', "address"),
    ("not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_messages_get_an_error_reply_and_the_connection_stays(surface, caplog, raw: str | bytes,
                                                                    expected: str):
    web = surface()
    with caplog.at_level(logging.DEBUG), connect(ws_url(web)) as ws:
        replies(ws, 0.3)
        assert expected in error_for(ws, raw)
        assert still_answers(ws)
    assert web.counters["malformed"] == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_parse_message_takes_the_documented_shape():
    from bridge.web.server import MessageError, parse_message

    assert parse_message('{"address": "/scorebridge/rule/key", "args": ["Am", 1, 0.5, true]}') == \
        ("/scorebridge/rule/key", ["Am", 1, 0.5, True])
    assert parse_message(b'{"address": "/scorebridge/panic"}') == ("/scorebridge/panic", [])
    with pytest.raises(MessageError, match="larger than"):
        parse_message("[" + " " * (64 * 1024) + "]")


def test_an_oversized_message_closes_only_that_connection(surface):
    web = surface()
    with connect(ws_url(web)) as other, connect(ws_url(web)) as big:
        replies(big, 0.2)
        big.send('{"address": "/x", "args": ["' + "a" * (200 * 1024) + '"]}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                big.recv(timeout=3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        replies(other, 0.2)
        assert still_answers(other)


# -- connections ------------------------------------------------------------------------------
def test_websockets_beyond_the_cap_are_answered_503(surface):
    from bridge.web.server import MAX_CLIENTS

    web = surface()
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(ws_url(web))) for _ in range(MAX_CLIENTS)]
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(web)):
            pass
        assert refused.value.response.status_code == 503
        clients[0].close()
        time.sleep(0.2)
        with connect(ws_url(web)) as ws:  # a freed place is taken again
            replies(ws, 0.2)
            assert still_answers(ws)


def test_tcp_connections_beyond_the_cap_are_closed_at_once(surface):
    from bridge.web.server import MAX_CONNECTIONS

    web = surface()
    idle = [raw_socket(web) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        extra = raw_socket(web)
        assert closed_within(extra, 2.0)
        extra.close()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    with connect(ws_url(web)) as ws:
        replies(ws, 0.2)
        assert still_answers(ws)


def test_a_half_open_connection_is_closed_after_the_handshake_timeout(surface, monkeypatch):
    from bridge.web import server

    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT_S", 0.5)
    web = surface()
    slow = raw_socket(web)
    slow.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ...and never the rest
    assert closed_within(slow, 3.0)
    slow.close()


def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_their_values(surface, monkeypatch):
    from bridge.web import server

    monkeypatch.setattr(server, "SEND_TIMEOUT_S", 0.5)
    web = surface()
    stuck = raw_socket(web, receive_buffer=4096)
    assert b" 101 " in handshake(stuck)  # a WebSocket that never reads
    with connect(ws_url(web)) as reader:
        replies(reader, 0.2)
        big = "x" * 60_000
        deadline = time.monotonic() + 10
        while web.counters["dropped_slow"] == 0 and time.monotonic() < deadline:
            for number in range(10):
                web.feedback(f"/scorebridge/big/{number}", (big,), None)
            replies(reader, 0.05)
        assert web.counters["dropped_slow"] == 1
        web.feedback("/scorebridge/rule/velocity", (99,), None)
        assert replies(reader, 2.0, until="/scorebridge/rule/velocity").get("/scorebridge/rule/velocity") == [99]
    assert closed_within(stuck, 2.0)
    stuck.close()


def test_values_waiting_for_a_client_are_bounded(surface):
    from bridge.web.server import MAX_PENDING_ADDRESSES

    web = surface()
    with connect(ws_url(web)) as ws:
        replies(ws, 0.2)
        client = next(iter(web._clients.values()))
        with web._lock:  # hold the sender back so nothing drains
            for number in range(MAX_PENDING_ADDRESSES + 100):
                client.pending[f"/scorebridge/x/{number}"] = [number]
        web.feedback("/scorebridge/one/more", (1,), None)
        assert len(client.pending) <= MAX_PENDING_ADDRESSES + 100
        assert web.counters["dropped_values"] == 1


def test_connections_are_logged_at_debug_and_the_token_never(surface, caplog):
    web = surface(allow_remote=True, token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        with connect(ws_url(web, TOKEN)) as ws:
            replies(ws, 0.2)
        with pytest.raises(InvalidStatus), connect(ws_url(web, "wrong")):
            pass
        time.sleep(0.2)
    texts = [r.getMessage() for r in caplog.records if r.name.startswith("bridge.")]  # not the client's
    assert any("connection open" in text for text in texts)  # still there with -v
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("bridge.")
                and r.levelno >= logging.INFO and "connection" in r.getMessage() and "refused" not in r.getMessage()]
    assert not [text for text in texts if TOKEN in text]


# -- the page's security properties -----------------------------------------------------------
def http_get(web: Any, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    sock = raw_socket(web)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    sock.settimeout(3)
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("path", ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/../server.py",
                                  "//etc/passwd", "/app.js/../../server.py", "/..%2f..%2fetc%2fpasswd",
                                  "/static/app.js", "/server.py", "/__init__.py", "/index.html%00.py"])
def test_only_the_page_files_are_served(surface, path: str):
    status, body = http_get(surface(), path)
    assert status == 404 and body == b"not found\n"


def test_foreign_origins_hosts_and_missing_tokens_are_refused(surface):
    web = surface()
    for origin in ("http://evil.example", "http://[", "null", "http://127.0.0.1:1"):
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(web), origin=origin):
            pass
        assert refused.value.response.status_code == 403
    status, _ = http_get(web, "/index.html", host="attacker.example")
    assert status == 200  # the page itself is public; its socket is not (next line)
    rebinding = raw_socket(web)
    key = base64.b64encode(os.urandom(16)).decode()
    rebinding.sendall(f"GET /ws HTTP/1.1\r\nHost: attacker.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert b" 403 " in rebinding.recv(4096)
    rebinding.close()
    locked = surface(allow_remote=True, token=TOKEN)
    for token in (None, "guess", TOKEN[:-1], "%C3%A9"):
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(locked, token)):
            pass
        assert refused.value.response.status_code == 403 and TOKEN.encode() not in refused.value.response.body
    with connect(ws_url(locked, TOKEN)) as ws:
        assert still_answers(ws)
    with pytest.raises(ConfigError, match="not loopback"):
        _surface("0.0.0.0", 0)


# -- control maps -----------------------------------------------------------------------------
HEADER = '[map]\nname = "hostile"\n\n[[bind]]\ncc = 1\ntarget = "rule/velocity"\n'


def maps_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "maps", "check", str(path), "--slot", "rule=rule"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("body, expected", [
    ("values = " + "[" * 5000 + "]" * 5000 + "\n", r"hostile.toml:7: nesting too deep"),
    ("label = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", r"hostile.toml:7: nesting too deep"),
    ("label = " + "[" * 12 + "]" * 12 + "\n", r"hostile.toml:7: nesting too deep"),
])
def test_a_deeply_nested_map_is_refused_with_its_line(tmp_path: Path, body: str, expected: str):
    from bridge.maps import load_map

    path = tmp_path / "hostile.toml"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(MappingError, match=expected):
        load_map(path, SLOTS)


@pytest.mark.parametrize("body, expected", [
    ('[[bind]]\nosc = "/a"\ntarget = "rule/velocity"\nin_min = -inf\n', "in_min must be a finite number"),
    ('[[bind]]\nosc = "/a"\ntarget = "rule/velocity"\nin_max = nan\n', "in_max must be a finite number"),
    ('[[bind]]\ncc = 2\ntarget = "rule/low_note"\nmin = ' + "9" * 400 + "\n", "min must be a finite number"),
    ('[[bind]]\ncc = 2\ntarget = "rule/velocity"\nscale = "fixed"\nvalue = ' + "9" * 400 + "\n",
     "value must be a finite number"),
    ('[[bind]]\ncc = 2\ntarget = "rule/key"\nvalues = [[1], {a = 2}]\n', "values must be a number, a string"),
])
def test_non_finite_and_huge_numbers_are_refused(tmp_path: Path, body: str, expected: str):
    from bridge.maps import load_map

    path = tmp_path / "hostile.toml"
    path.write_text(HEADER + "\n" + body, encoding="utf-8")
    with pytest.raises(MappingError, match=expected):
        load_map(path, SLOTS)


def test_maps_that_are_too_large_not_files_or_not_utf8_are_refused(tmp_path: Path):
    from bridge.maps import MAX_BINDINGS, MAX_MAP_BYTES, load_map

    big = tmp_path / "big.toml"
    big.write_text(HEADER + "#" * MAX_MAP_BYTES, encoding="utf-8")
    with pytest.raises(MappingError, match=f"larger than {MAX_MAP_BYTES} bytes"):
        load_map(big, SLOTS)
    many = tmp_path / "many.toml"
    many.write_text("".join(f'[[bind]]\ncc = {n % 128}\nchannel = {n % 16 + 1}\ntarget = "rule/velocity"\n'
                            for n in range(MAX_BINDINGS + 1)), encoding="utf-8")
    with pytest.raises(MappingError, match=f"at most {MAX_BINDINGS}"):
        load_map(many, SLOTS)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(HEADER.encode() + b'label = "caf\xe9"\n')
    with pytest.raises(MappingError, match=r"latin.toml:7: not UTF-8"):
        load_map(latin, SLOTS)
    with pytest.raises(MappingError, match="not a regular file"):
        load_map(tmp_path, SLOTS)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(MappingError, match="not a regular file"):
        load_map(fifo, SLOTS)  # refused without waiting for a writer
    assert time.monotonic() - started < 1


def test_maps_check_exits_1_with_one_line_for_hostile_files(tmp_path: Path):
    deep = tmp_path / "deep.toml"
    deep.write_text(HEADER + "values = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, expected in ((deep, "deep.toml:7: nesting too deep"), (fifo, "not a regular file")):
        done = maps_check(path)
        assert done.returncode == 1 and done.stderr.startswith("scorebridge maps: error:") and \
            expected in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.jack
def test_serve_refuses_a_hostile_map_with_one_line(jack_server, tmp_path: Path):
    deep = tmp_path / "deep.toml"
    deep.write_text(HEADER + "values = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bridge", "serve", "--backend", "jack", "--client",
                           f"sbdeep{os.getpid()}", "--osc-port", "0", "--no-web", "--map", str(deep)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "deep.toml:7: nesting too deep" in done.stderr.strip().splitlines()[-1]


# -- the learn map ----------------------------------------------------------------------------
def _learner(path: Path) -> Any:
    from bridge.learn import Learner

    published: list[tuple[str, tuple[Any, ...]]] = []
    bus = SimpleNamespace(publish=lambda address, args, origin: published.append((address, args)))
    controls = SimpleNamespace(slot_engines=lambda: SLOTS, current=lambda target: 72, rebuild=lambda: None, bus=bus)
    learner = Learner(controls, path, SLOTS)  # type: ignore[arg-type]
    learner.published = published
    return learner


def test_the_learn_map_stops_at_max_bindings_and_is_left_whole(tmp_path: Path):
    from bridge.maps import MAX_BINDINGS

    controls = [(source, number, channel) for source in ("note", "cc") for channel in range(1, 17)
                for number in range(128)][:MAX_BINDINGS - 1]
    path = tmp_path / "learned.toml"
    path.write_text("".join(f'[[bind]]\n{source} = {number}\nchannel = {channel}\ntarget = "rule/velocity"\n'
                            + ('scale = "fixed"\nvalue = 72\n' if source == "note" else "")
                            for source, number, channel in controls), encoding="utf-8")
    learner = _learner(path)
    assert len(learner.map.bindings) == MAX_BINDINGS - 1 and not learner.unused_tables
    learner.arm("rule/velocity")
    assert learner.capture("cc", 15, 127, 64) is not None  # the last place
    before = path.read_bytes()
    learner.arm("rule/velocity")
    assert learner.capture("program", 0, 5, 5) is None
    assert any(address.endswith("/learn/error") and "already holds" in args[0] for address, args in learner.published)
    assert path.read_bytes() == before
    learner.arm("rule/low_note")
    assert learner.capture("cc", 15, 127, 64) is not None  # relearning a bound control still works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learned.toml"]


def test_a_failed_learn_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "learned.toml"
    learner = _learner(path)
    learner.arm("rule/velocity")
    assert learner.capture("cc", 0, 20, 64) is not None
    before = path.read_text()

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    learner.arm("rule/low_note")
    assert learner.capture("cc", 0, 22, 64) is None
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["learned.toml"]


@pytest.mark.parametrize("content", [b"values = " + b"[" * 5000 + b"]" * 5000 + b"\n", b"\xff\xfe[[bind]]\n"])
def test_a_hostile_learn_map_is_an_error_naming_the_file(tmp_path: Path, content: bytes):
    path = tmp_path / "learned.toml"
    path.write_bytes(content)
    with pytest.raises(MappingError, match="learned.toml"):
        _learner(path)


def test_temporaries_of_an_interrupted_learn_save_are_removed_at_start(tmp_path: Path):
    path = tmp_path / "learned.toml"
    stale, fresh = tmp_path / ".learned.toml.abc123.tmp", tmp_path / ".learned.toml.def456.tmp"
    for leftover in (stale, fresh):
        leftover.write_text("[[bind]]\ncc = 1\n", encoding="utf-8")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    _learner(path)
    assert not stale.exists() and fresh.exists()  # a fresh one may be another bridge's save in progress


@pytest.mark.parametrize("port", [-1, 70000])
def test_a_port_that_cannot_be_bound_fails_start_at_once(port: int):
    from core.errors import ScoreBridgeError

    web = _surface("127.0.0.1", port)
    started = time.monotonic()
    with pytest.raises(ScoreBridgeError, match="cannot serve the browser surface"):
        web.start()
    assert time.monotonic() - started < 5 and not web.running


def test_a_port_in_use_fails_start_and_running_says_so(surface):
    from core.errors import ScoreBridgeError

    first = surface()
    assert first.running
    with pytest.raises(ScoreBridgeError, match="choose another port"):
        _surface("127.0.0.1", first.port).start()
    first.stop()
    assert not first.running


def test_a_flood_of_refused_connections_is_one_warning(surface, caplog):
    web = surface()
    with caplog.at_level(logging.DEBUG, logger="bridge.web"):
        for _ in range(30):
            with pytest.raises(InvalidStatus), connect(ws_url(web), origin="http://evil.example"):
                pass
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("bridge.") and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "origin http://evil.example" in warnings[0]
    assert web.counters["refused"] == 30


def test_the_map_header_takes_a_string_name_and_a_boolean_feedback():
    from bridge.maps import parse_map

    with pytest.raises(MappingError, match=r"m.toml:3: \[map\] feedback must be true or false \(got 'no'\)"):
        parse_map('[map]\nname = "x"\nfeedback = "no"\n', "m.toml", SLOTS)
    with pytest.raises(MappingError, match=r"m.toml:2: \[map\] name must be a string"):
        parse_map("[map]\nname = [1, 2]\n", "m.toml", SLOTS)


UPGRADE_HEADERS = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("request_text, status", [
    ("GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
    ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n" + UPGRADE_HEADERS + "\r\n", 403),
    ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil.example\r\n"
     + UPGRADE_HEADERS + "\r\n", 403),
])
def test_odd_paths_and_repeated_headers_are_refused_not_a_server_error(surface, caplog, request_text: str,
                                                                         status: int):
    web = surface()
    sock = raw_socket(web)
    sock.sendall(request_text.encode())
    sock.settimeout(3)
    assert sock.recv(4096).split(b"\r\n")[0] == f"HTTP/1.1 {status} ".encode() + \
        {403: b"Forbidden", 404: b"Not Found"}[status]
    sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- the live view ----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [[], [2], ["1"], [1, 1], [0.5], [-1]])
def test_a_bad_live_request_gets_an_error_and_the_connection_stays(surface, args: list[Any]):
    web = surface()
    with connect(ws_url(web)) as ws:
        replies(ws, 0.2)
        assert "takes 1 (send the live view) or 0" in error_for(ws, json.dumps({"address": "/scorebridge/live",
                                                                                "args": args}))
        assert still_answers(ws)
    assert web.live_clients() == 0


def test_only_browsers_that_ask_get_the_live_view(surface):
    web = surface()
    with connect(ws_url(web)) as plain, connect(ws_url(web)) as page:
        replies(plain, 0.2)
        replies(page, 0.2)
        page.send(json.dumps({"address": "/scorebridge/live", "args": [1]}))
        assert wait_for(lambda: web.live_clients() == 1)
        web.publish_live("/scorebridge/live", ('{"beats": 1}',))
        assert replies(page, 2.0, until="/scorebridge/live").get("/scorebridge/live") == ['{"beats": 1}']
        assert "/scorebridge/live" not in replies(plain, 0.3)  # an OSC-style client is not flooded
        page.send(json.dumps({"address": "/scorebridge/live", "args": [0]}))
        assert wait_for(lambda: web.live_clients() == 0)
        web.publish_live("/scorebridge/live", ('{"beats": 2}',))
        assert "/scorebridge/live" not in replies(page, 0.3)


def wait_for(predicate: Any, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return bool(predicate())
