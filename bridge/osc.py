"""The OSC control surface: a UDP server on loopback by default, parameter addresses for every
engine slot, subscriptions with rate-limited feedback, panic, status and transport control.

Malformed packets and refused senders are counted and dropped; a handler error is logged and
counted; nothing ends the receive loop but ``stop()``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from bridge.errors import ConfigError, ScoreBridgeError

__all__ = ["OscServer", "build_message", "PREFIX"]

log = logging.getLogger(__name__)
PREFIX = "/scorebridge"
_MAX_SUBSCRIBERS = 32


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        if isinstance(arg, bool):
            arg = int(arg)
        builder.add_arg(arg)
    return builder.build().dgram


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OscServer:
    """Receives control and sends feedback. ``routes`` maps an address (after the prefix) to a
    handler ``(args, sender) -> reply args or None``; ``/<slot>/<param>`` falls back to
    ``set_param``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        allow_remote: bool = False,
        allow: tuple[str, ...] = (),
        feedback_interval_s: float = 0.02,
    ) -> None:
        if not _is_loopback(host) and not allow_remote:
            raise ConfigError(
                f"OSC bind address {host} is not loopback: pass --osc-allow-remote and "
                "--osc-allow with the client addresses that may control the bridge"
            )
        if allow_remote and not allow:
            raise ConfigError("--osc-allow-remote needs an allow-list (--osc-allow 192.168.1.20,...)")
        self.host, self.port = host, port
        self.allow = frozenset(allow)
        self.feedback_interval_s = feedback_interval_s
        self.counters: Counter[str] = Counter()
        self.routes: dict[str, Callable[[list[Any], tuple[str, int]], Any]] = {}
        self.param_handler: Callable[[str, str, list[Any], tuple[str, int]], Any] | None = None
        # Addresses outside /scorebridge/ (surfaces bound through a control map): True = handled.
        self.external_handler: Callable[[str, list[Any], tuple[str, int]], bool] | None = None
        self.subscribers: set[tuple[str, int]] = set()
        self._pending: dict[str, tuple[tuple[Any, ...], tuple[str, int] | None]] = {}
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False
        self._sock: socket.socket | None = None
        self._send_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ScoreBridgeError(
                f"cannot listen for OSC on {self.host}:{self.port}: {exc.strerror}; "
                "is another bridge running? choose another port with --osc-port"
            ) from exc
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._running = True
        for target, name in ((self._receive_loop, "osc-in"), (self._feedback_loop, "osc-feedback")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        self._send_sock.close()

    # -- receiving -------------------------------------------------------------------
    def _receive_loop(self) -> None:
        sock = self._sock
        while self._running and sock is not None:
            try:
                data, sender = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._running:
                    log.error("OSC receive failed: %s", exc)
                    self.counters["receive_errors"] += 1
                continue
            self.handle_datagram(data, sender)

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> None:
        if not _is_loopback(sender[0]) and sender[0] not in self.allow:
            self.counters["refused"] += 1
            return
        try:
            packet = OscPacket(data)
        except ParseError:
            self.counters["malformed"] += 1
            log.debug("malformed OSC packet from %s (%d bytes)", sender, len(data))
            return
        for timed in packet.messages:
            self.dispatch(timed.message.address, list(timed.message.params), sender)

    def dispatch(self, address: str, args: list[Any], sender: tuple[str, int],
                 reply_to: Callable[..., None] | None = None) -> None:
        """Handle one message from ``sender``; replies and errors go to ``reply_to(address, *args)``
        (default: back to the sender over UDP). The browser surface calls this too."""
        reply_to = reply_to or (lambda reply_address, *reply_args: self.send_to(sender, reply_address,
                                                                                 *reply_args))
        if not address.startswith(PREFIX + "/"):
            try:
                handled = self.external_handler is not None and self.external_handler(address, args, sender)
            except (ScoreBridgeError, ValueError, TypeError) as exc:
                handled = True
                self.counters["rejected"] += 1
                reply_to(PREFIX + "/error", f"{address}: {exc}")
            self.counters["handled" if handled else "unknown_address"] += 1
            return
        path = address[len(PREFIX):]
        try:
            handler = self.routes.get(path)
            if handler is not None:
                reply = handler(args, sender)
            else:
                parts = path.strip("/").split("/")
                if len(parts) != 2 or self.param_handler is None:
                    self.counters["unknown_address"] += 1
                    log.warning("unknown OSC address %s", address)
                    return
                reply = self.param_handler(parts[0], parts[1], args, sender)
            self.counters["handled"] += 1
            if reply is not None:
                reply_address, *reply_args = reply
                reply_to(reply_address, *reply_args)
        except (ScoreBridgeError, ValueError, TypeError, IndexError) as exc:
            self.counters["rejected"] += 1
            log.warning("OSC %s %s rejected: %s", address, args, exc)
            reply_to(PREFIX + "/error", f"{address}: {exc}")

    # -- sending ---------------------------------------------------------------------
    def send_to(self, target: tuple[str, int], address: str, *args: Any) -> None:
        try:
            self._send_sock.sendto(build_message(address, *args), target)
            self.counters["sent"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            log.debug("OSC send to %s failed: %s", target, exc)

    def subscribe(self, host: str, port: int) -> None:
        if not (0 < port < 65536):
            raise ValueError(f"subscribe port {port} is outside 1..65535")
        if not _is_loopback(host) and host not in self.allow:
            raise ValueError(f"{host} is not loopback and not in the OSC allow-list")
        if len(self.subscribers) >= _MAX_SUBSCRIBERS and (host, port) not in self.subscribers:
            raise ValueError(f"too many OSC subscribers (limit {_MAX_SUBSCRIBERS})")
        self.subscribers.add((host, port))

    def unsubscribe(self, host: str, port: int) -> None:
        self.subscribers.discard((host, port))

    def feedback(self, address: str, *args: Any, exclude: tuple[str, int] | None = None) -> None:
        """Queue a value for every subscriber but ``exclude`` (the surface that sent it); only
        the newest value per address is sent, at most once per ``feedback_interval_s``."""
        with self._pending_lock:
            self._pending[address] = (args, exclude)
        self._wake.set()

    def _feedback_loop(self) -> None:
        while self._running:
            self._wake.wait()
            self._wake.clear()
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for address, (args, exclude) in pending.items():
                for target in list(self.subscribers):
                    if target != exclude:
                        self.send_to(target, address, *args)
            time.sleep(self.feedback_interval_s)  # the feedback thread's own rate limit

    def status_json(self, extra: dict[str, Any]) -> str:
        return json.dumps({"osc": dict(self.counters), **extra}, sort_keys=True)
