"""The browser surface: a page (plain HTML + JS, shipped as package data) and a WebSocket that
speaks the OSC address table as JSON, so a tablet needs no third-party app.

Client -> bridge: ``{"address": "/scorebridge/rule/velocity", "args": [90]}``, handled exactly
like the same OSC message. Bridge -> client: a JSON list of ``[address, args]`` pairs, newest
value per address, at most one batch per interval per client; a change is not echoed to the
browser that made it. Loopback only by default; ``--web-allow-remote`` needs a token, which the
page and the socket must present (``?token=``). A browser's Origin must match the page's host, and
without a token the Host must be a loopback name (defeats DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import threading
from http import HTTPStatus
from importlib.resources import files
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.errors import ConfigError, ScoreBridgeError
from bridge.feedback import Origin
from bridge.osc import PREFIX

if TYPE_CHECKING:
    from bridge.session import Session

__all__ = ["WebSurface"]

log = logging.getLogger(__name__)
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
_REFUSED_FROM_WEB = ("/subscribe", "/unsubscribe")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


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


class WebSurface:
    """Serves the page and the WebSocket on its own thread (one asyncio loop)."""

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 9080, allow_remote: bool = False,
                 token: str | None = None, interval_s: float = 0.02) -> None:
        if not _is_loopback(host) and not allow_remote:
            raise ConfigError(f"browser surface address {host} is not loopback: pass --web-allow-remote "
                              "(a token is then required)")
        self.session = session
        self.host, self.port = host, port
        self.token = token or (secrets.token_urlsafe(16) if allow_remote else None)
        self.interval_s = interval_s
        self.counters: dict[str, int] = {"clients": 0, "messages_in": 0, "refused": 0, "batches_out": 0}
        self._clients: dict[int, _Client] = {}
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
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise ScoreBridgeError(f"cannot serve the browser surface on {self.host}:{self.port}: "
                                   f"{self._error}; choose another port with --web-port") from None

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=5)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except OSError as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.port, process_request=self._process_request,
                         server_header=None, logger=log) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # -- HTTP: the page, and the checks before a socket opens --------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path == "/ws":
            problem = self._refusal(request, parse_qs(parts.query))
            if problem:
                self.counters["refused"] += 1
                log.warning("browser surface: refused a socket: %s", problem)
                return connection.respond(HTTPStatus.FORBIDDEN, problem + "\n")
            return None
        if parts.path not in _STATIC:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        name, content_type = _STATIC[parts.path]
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
        host = request.headers.get("Host", "")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return f"origin {origin} is not this page"
        if self.token is None and urlsplit(f"//{host}").hostname not in _LOOPBACK_NAMES:
            return f"host {host} is not loopback (LAN access needs --web-allow-remote and a token)"
        return ""

    # -- the socket --------------------------------------------------------------------------
    async def _handler(self, connection: ServerConnection) -> None:
        client = _Client(next(self._numbers), connection)
        with self._lock:
            self._clients[client.number] = client
        self.counters["clients"] += 1
        sender = asyncio.create_task(self._send_loop(client))
        try:
            self._queue(client, f"{PREFIX}/describe", [self._describe()])
            from bridge.session_osc import current_values

            for address, args in current_values(self.session):
                self._queue(client, address, list(args))
            for address, value in self.session.controls.surface_values():
                self._queue(client, address, [value])
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
            message = json.loads(text)
            address, args = str(message["address"]), list(message.get("args", []))
        except (ValueError, KeyError, TypeError):
            self._queue(client, f"{PREFIX}/error", ["malformed message: send {\"address\": ..., \"args\": [...]}"])
            return
        if address[len(PREFIX):] in _REFUSED_FROM_WEB:
            self._queue(client, f"{PREFIX}/error", [f"{address}: the browser is always subscribed"])
            return
        if any(not isinstance(a, (int, float, str, bool)) for a in args):
            self._queue(client, f"{PREFIX}/error", [f"{address}: arguments must be numbers or strings"])
            return

        def reply(reply_address: str, *reply_args: Any) -> None:
            self._queue(client, reply_address, list(reply_args))

        self.session.osc.dispatch(address, args, ("web", client.number), reply)

    def _describe(self) -> str:
        from bridge.session_osc import describe

        return json.dumps(describe(self.session), sort_keys=True)

    async def _send_loop(self, client: _Client) -> None:
        while True:
            await client.wake.wait()
            client.wake.clear()
            with self._lock:
                pending, client.pending = client.pending, {}
            if pending:
                try:
                    await client.connection.send(json.dumps([[a, v] for a, v in pending.items()]))
                    self.counters["batches_out"] += 1
                except ConnectionClosed:
                    return
            await asyncio.sleep(self.interval_s)

    # -- from any thread ---------------------------------------------------------------------
    def _queue(self, client: _Client, address: str, args: list[Any]) -> None:
        with self._lock:
            client.pending[address] = args
        if self._loop is not None:
            self._loop.call_soon_threadsafe(client.wake.set)

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
                self._queue(client, f"{PREFIX}/describe", [text])


def _plain(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
