"""The browser surface: a page (plain HTML + JS, shipped as package data) and a WebSocket that
speaks the OSC address table as JSON, so a tablet needs no third-party app.

Client -> bridge: ``{"address": "/scorebridge/rule/velocity", "args": [90]}``, handled exactly
like the same OSC message. Bridge -> client: a JSON list of ``[address, args]`` pairs, newest
value per address, at most one batch per interval per client; a change is not echoed to the
browser that made it. Loopback only by default; ``--web-allow-remote`` needs a token, which the
page and the socket must present (``?token=``). A browser's Origin must match the page's host, and
without a token the Host must be a loopback name (defeats DNS rebinding).

Nothing a client sends can stop the surface for the others: messages are bounded in size and
nesting and must hold finite numbers (a bad one gets an error reply, the connection stays), each
client's outgoing values are coalesced per address, a client that stops reading is dropped, and
connections are capped. Connections are logged at DEBUG, and the token never appears in the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from importlib.resources import files
from itertools import count
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge import addresses as A
from bridge.feedback import Origin
from core.errors import ConfigError, ScoreBridgeError
from core.nesting import nesting_depth

__all__ = ["LIVE", "MAX_CLIENTS", "MAX_CONNECTIONS", "MAX_MESSAGE_BYTES", "MAX_MESSAGE_DEPTH", "MessageError",
           "WebSurface", "parse_message"]

log = logging.getLogger(__name__)
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
_REFUSED_FROM_WEB = (A.SUBSCRIBE, A.UNSUBSCRIBE)
# ``{"address": "/scorebridge/live", "args": [1]}`` asks for the live view (bridge.web.live)
LIVE = "live"
# dispatch(address, args, sender, reply): handles one message as the OSC server does (its
# replies and errors go to reply(address, *args)).
Dispatch = Callable[[str, list[Any], tuple[Any, ...], Callable[..., None]], None]
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")

# A control message is under 200 bytes (a long text argument, a file name, under 1 KB); larger
# ones are refused by the WebSocket layer (close code 1009) before they are buffered whole.
MAX_MESSAGE_BYTES = 64 * 1024
# {"address": ..., "args": [...]} nests 2 levels; deeper JSON is refused with an error reply.
MAX_MESSAGE_DEPTH = 8
# Arguments of one message (the OSC address table takes at most a few).
MAX_ARGS = 64
# Integers beyond 64 bits cannot be OSC arguments and cannot become floats safely.
_MAX_INT = 2**63
# Open WebSockets at once (tablets, phones, browser tabs); more are answered 503.
MAX_CLIENTS = 32
# TCP connections at once, page loads and unfinished handshakes included: beyond it new ones are
# closed at once, so half-open connections cannot use up the bridge's file descriptors.
MAX_CONNECTIONS = 64
# A connection that has not finished its HTTP request and WebSocket handshake by then is closed.
HANDSHAKE_TIMEOUT_S = 5.0
# Keepalive: a client that does not answer a ping within PING_TIMEOUT_S is dropped.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
# How long start() waits for the socket to be bound before it reports a failure.
START_TIMEOUT_S = 10.0
# Refused and dropped connections are warned about at most once per this interval (the others at
# DEBUG, counted in the next warning), so a flood of connections cannot flood the log.
WARNING_INTERVAL_S = 10.0
# A client that does not answer the closing handshake within this time is cut (stop stays quick).
CLOSE_TIMEOUT_S = 2.0
# Received frames buffered per connection before reading pauses (TCP then slows the sender).
MAX_QUEUED_FRAMES = 16
# A batch of values the client's socket has not taken within this time means it stopped reading:
# it is dropped (its values are coalesced until then, so waiting costs no memory).
SEND_TIMEOUT_S = 5.0
# Distinct addresses waiting for one client: the address table is far smaller, so this only
# bounds memory if something publishes unbounded addresses.
MAX_PENDING_ADDRESSES = 8192


class MessageError(ValueError):
    """A client message that cannot be handled; the text is sent back to that client."""


def _reject_constant(name: str) -> Any:
    raise MessageError(f"{name} is not a number the bridge accepts (numbers must be finite)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise MessageError(f"{text[:40]} is out of range (numbers must be finite)")
    return number


def _bounded_int(text: str) -> int:
    number = int(text)  # Python refuses more than 4,300 digits (ValueError)
    if not -_MAX_INT <= number < _MAX_INT:
        raise MessageError(f"{text[:40]}{'...' if len(text) > 40 else ''} does not fit in 64 bits")
    return number


def parse_message(data: str | bytes) -> tuple[str, list[Any]]:
    """One client message -> (address, args), or MessageError saying what is wrong with it."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes is larger than {MAX_MESSAGE_BYTES}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        message = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float,
                             parse_int=_bounded_int)
    except MessageError:
        raise
    except RecursionError:
        raise MessageError(f"nesting too deep (at most {MAX_MESSAGE_DEPTH} levels)") from None
    except ValueError as exc:
        raise MessageError(f"not JSON ({str(exc)[:80]})") from None
    if nesting_depth(message, MAX_MESSAGE_DEPTH) > MAX_MESSAGE_DEPTH:
        raise MessageError(f"nesting too deep (at most {MAX_MESSAGE_DEPTH} levels)")
    if not isinstance(message, dict) or not isinstance(message.get("address"), str):
        raise MessageError(f'send {{"address": "{A.PREFIX}/...", "args": [...]}}')
    args = message.get("args", [])
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise MessageError(f"args must be a list of at most {MAX_ARGS} numbers or strings")
    if any(not isinstance(a, (int, float, str, bool)) for a in args):
        raise MessageError(f"{message['address'][:100]}: arguments must be numbers or strings")
    return message["address"], args


class _QuietLog(logging.LoggerAdapter):
    """The websockets library's log: per-connection news at DEBUG (not INFO), the token masked."""

    def __init__(self, logger: logging.Logger, surface: WebSurface) -> None:
        super().__init__(logger, {})
        self.surface = surface

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        level = logging.DEBUG if level == logging.INFO else level
        if not self.isEnabledFor(level):
            return
        text = self._masked(str(msg) % args if args else str(msg))
        problem = sys.exc_info()[1] if kwargs.pop("exc_info", None) else None
        if problem is not None and level > logging.DEBUG:
            # One line in the log; the traceback only with -v (it is the library's, not the user's).
            self.logger.log(level, "%s: %s", text, self._masked(f"{type(problem).__name__}: {problem}"), **kwargs)
            self.logger.debug("%s", text, exc_info=problem)
            return
        self.logger.log(level, "%s", text, exc_info=problem, **kwargs)

    def _masked(self, text: str) -> str:
        token = self.surface.token
        if not token:
            return text
        return text.replace(token, "***").replace(quote(token, safe=""), "***")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class _Client:
    def __init__(self, number: int, connection: ServerConnection) -> None:
        self.number = number
        self.connection = connection
        self.pending: dict[str, list[Any]] = {}
        self.wake = asyncio.Event()
        self.live = False  # sent the live view (the page asks for it; a plain client is not)


def _counted_connection(surface: WebSurface) -> type[ServerConnection]:
    """A ServerConnection class that counts open TCP connections and closes those over the cap."""

    class CountedConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            surface._open_connections.add(id(self))
            if len(surface._open_connections) > MAX_CONNECTIONS:
                surface.counters["refused_busy"] += 1
                transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            surface._open_connections.discard(id(self))
            super().connection_lost(exc)

    return CountedConnection


class WebSurface:
    """Serves the page and the WebSocket on its own thread (one asyncio loop).

    A client's message goes to ``dispatch`` (as an OSC message would); a client that connects
    is sent ``describe()`` (as JSON) and every ``values()`` pair (address, args)."""

    def __init__(self, dispatch: Dispatch, values: Callable[[], list[tuple[str, tuple[Any, ...]]]],
                 describe: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 9080,
                 allow_remote: bool = False, token: str | None = None, interval_s: float = 0.02) -> None:
        if not _is_loopback(host) and not allow_remote:
            raise ConfigError(f"browser surface address {host} is not loopback: pass --web-allow-remote "
                              "(a token is then required)")
        self._dispatch, self._values, self._description = dispatch, values, describe
        self.host, self.port = host, port
        self.token = token or (secrets.token_urlsafe(16) if allow_remote else None)
        self.interval_s = interval_s
        self.counters: dict[str, int] = {"clients": 0, "messages_in": 0, "refused": 0, "batches_out": 0,
                                         "malformed": 0, "refused_busy": 0, "dropped_slow": 0,
                                         "dropped_values": 0, "live_on": 0}
        self._clients: dict[int, _Client] = {}
        self._open_connections: set[int] = set()
        self._last_warning_s = -math.inf
        self._unwarned = 0
        self._numbers = count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="web", daemon=True)

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Serve from now on, or raise ScoreBridgeError (the port is taken or invalid, the address
        cannot be bound, or the server did not start in time): never a surface that is not there."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise ScoreBridgeError(f"the browser surface on {self.host}:{self.port} did not start within "
                                   f"{START_TIMEOUT_S:.0f} s")
        if self._error is not None:
            raise ScoreBridgeError(f"cannot serve the browser surface on {self.host}:{self.port}: "
                                   f"{self._error}; choose another port with --web-port") from None

    def live_clients(self) -> int:
        """Browsers that asked for the live view (``/scorebridge/live 1``)."""
        with self._lock:
            return sum(c.live for c in self._clients.values())

    def publish_live(self, address: str, args: tuple[Any, ...]) -> None:
        """A live-view value for every browser that asked for it."""
        with self._lock:
            clients = [c for c in self._clients.values() if c.live]
        for client in clients:
            self._queue(client, address, list(args))

    @property
    def running(self) -> bool:
        """Whether the surface is serving (False before start, after stop or after a failure)."""
        return self._ready.is_set() and self._error is None and self._thread.is_alive()

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=5)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except (OSError, OverflowError, ValueError) as exc:  # binding: port taken or out of range, bad host
            self._error = exc
            if self._ready.is_set():  # it was serving: say so, once, without a traceback
                log.error("browser surface stopped: %s", exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.port, process_request=self._process_request,
                         server_header=None, logger=_QuietLog(log, self), compression=None,
                         open_timeout=HANDSHAKE_TIMEOUT_S, ping_interval=PING_INTERVAL_S,
                         ping_timeout=PING_TIMEOUT_S, close_timeout=CLOSE_TIMEOUT_S,
                         max_size=MAX_MESSAGE_BYTES, max_queue=MAX_QUEUED_FRAMES,
                         create_connection=_counted_connection(self)) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _warn(self, message: str, *args: Any) -> None:
        """A WARNING, unless one was logged less than WARNING_INTERVAL_S ago (then DEBUG)."""
        now = time.monotonic()
        if now - self._last_warning_s < WARNING_INTERVAL_S:
            self._unwarned += 1
            log.debug("browser surface: " + message, *args)
            return
        more = f" (and {self._unwarned} more since the last warning)" if self._unwarned else ""
        log.warning("browser surface: " + message + "%s", *args, more)
        self._last_warning_s, self._unwarned = now, 0

    # -- HTTP: the page, and the checks before a socket opens --------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        # Split by hand: urlsplit raises on a path like "//[" (it reads a host there).
        path, _, query = request.path.partition("?")
        if path == "/ws":
            problem = self._refusal(request, parse_qs(query))
            if problem:
                self.counters["refused"] += 1
                self._warn("refused a socket: %s", problem)
                return connection.respond(HTTPStatus.FORBIDDEN, problem + "\n")
            if len(self._clients) >= MAX_CLIENTS:
                self.counters["refused_busy"] += 1
                self._warn("refused a socket: %d are open, the most it serves", MAX_CLIENTS)
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                          f"too many browser connections (at most {MAX_CLIENTS})\n")
            return None
        if path not in _STATIC:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name, content_type = _STATIC[path]
        body = (files("bridge.web") / "static" / name).read_bytes()
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                           ("X-Frame-Options", "DENY")])  # no clickjacking of the panic button
        return Response(HTTPStatus.OK, "OK", headers, body)

    def _refusal(self, request: Request, query: dict[str, list[str]]) -> str:
        """Why this socket must not open ('' = it may)."""
        given = query.get("token", [""])[0].encode()
        if self.token is not None and not secrets.compare_digest(given, self.token.encode()):
            return "wrong or missing token"
        hosts, origins = request.headers.get_all("Host"), request.headers.get_all("Origin")
        if len(hosts) != 1 or len(origins) > 1:
            return "a request needs exactly one Host header and at most one Origin"
        host, origin = hosts[0], (origins[0] if origins else None)
        if origin is not None and _netloc(origin) != host:
            return f"origin {origin[:100]} is not this page"
        if self.token is None and _hostname(host) not in _LOOPBACK_NAMES:
            return f"host {host[:100]} is not loopback (LAN access needs --web-allow-remote and a token)"
        return ""

    # -- the socket --------------------------------------------------------------------------
    async def _handler(self, connection: ServerConnection) -> None:
        client = _Client(next(self._numbers), connection)
        with self._lock:
            self._clients[client.number] = client
        self.counters["clients"] += 1
        sender = asyncio.create_task(self._send_loop(client))
        try:
            self._queue(client, A.address(A.DESCRIBE), [self._describe()])
            for address, args in self._values():
                self._queue(client, address, list(args))
            async for text in connection:
                # Off the loop: a swap may construct an engine (and load its model).
                await asyncio.to_thread(self._receive, client, text)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.pop(client.number, None)
            sender.cancel()

    def _receive(self, client: _Client, text: str | bytes) -> None:
        self.counters["messages_in"] += 1
        try:
            address, args = parse_message(text)
        except MessageError as exc:
            self.counters["malformed"] += 1
            self._queue(client, A.address(A.ERROR), [f"malformed message: {exc}"])
            return
        if A.path_of(address) in _REFUSED_FROM_WEB:
            self._queue(client, A.address(A.ERROR), [f"{address}: the browser is always subscribed"])
            return
        if A.path_of(address) == LIVE:
            if len(args) != 1 or args[0] not in (0, 1):
                self._queue(client, A.address(A.ERROR), [f"{address} takes 1 (send the live view) or 0 (stop)"])
                return
            client.live = bool(args[0])
            self.counters["live_on"] += client.live
            return

        def reply(reply_address: str, *reply_args: Any) -> None:
            self._queue(client, reply_address, list(reply_args))

        self._dispatch(address, args, ("web", client.number), reply)

    def _describe(self) -> str:
        return json.dumps(self._description(), sort_keys=True)

    async def _send_loop(self, client: _Client) -> None:
        while True:
            await client.wake.wait()
            client.wake.clear()
            with self._lock:
                pending, client.pending = client.pending, {}
            if pending:
                try:
                    await asyncio.wait_for(client.connection.send(json.dumps([[a, v] for a, v in pending.items()])),
                                           SEND_TIMEOUT_S)
                    self.counters["batches_out"] += 1
                except ConnectionClosed:
                    return
                except TimeoutError:
                    # Half a frame may be written: the connection cannot go on, so it is cut.
                    self.counters["dropped_slow"] += 1
                    self._warn("dropped browser %d: it took no data for %.0f s", client.number, SEND_TIMEOUT_S)
                    client.connection.transport.abort()
                    return
            await asyncio.sleep(self.interval_s)

    # -- from any thread ---------------------------------------------------------------------
    def _queue(self, client: _Client, address: str, args: list[Any]) -> None:
        with self._lock:
            if address not in client.pending and len(client.pending) >= MAX_PENDING_ADDRESSES:
                self.counters["dropped_values"] += 1
                return
            first = not client.pending
            client.pending[address] = args
        # Only the first value after a send wakes the sender (it takes all that came since), so a
        # flood of changes costs the loop one wake-up per batch, not one per value.
        if first and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(client.wake.set)
            except RuntimeError:  # the loop has closed (the surface stopped): nobody is left to send to
                return

    def feedback(self, address: str, args: tuple[Any, ...], origin: Origin) -> None:
        """A change for every browser but the one that made it (a FeedbackBus sink)."""
        skip = origin[1] if origin and origin[0] == "web" else None
        with self._lock:
            clients = [c for n, c in self._clients.items() if n != skip]
        for client in clients:
            self._queue(client, address, [_plain(a) for a in args])

    def describe_changed(self) -> None:
        """An engine was swapped: every browser redraws its slot."""
        with self._lock:
            clients = list(self._clients.values())
        if clients:
            text = self._describe()
            for client in clients:
                self._queue(client, A.address(A.DESCRIBE), [text])


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None


def _hostname(host: str) -> str | None:
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
