"""The OSC control surface: a UDP server on loopback by default, parameter addresses for every
engine slot, subscriptions with rate-limited feedback, panic, status and transport control.

Malformed packets and refused senders are counted and dropped; a handler error is logged and
counted; nothing ends the receive loop but ``stop()``. Datagrams are parsed by the strict
``bridge.osc_packet`` parser. Feedback and status replies go only to loopback or allow-listed
addresses, never to the bridge's own port, and feedback is rate-limited as a whole.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from itertools import islice
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.addresses import ERROR, PREFIX, path_of
from bridge.addresses import address as full_address
from bridge.osc_packet import MalformedPacket, parse_datagram
from core.errors import ConfigError, ScoreBridgeError

# PREFIX stays importable from here for the commands that build requests.
__all__ = ["FEEDBACK_BURST", "FEEDBACK_RATE_PER_S", "LOG_INTERVAL_S", "MAX_SUBSCRIBERS", "PREFIX",
           "OscServer", "build_message"]

log = logging.getLogger(__name__)
# Feedback targets at once (each gets every change).
MAX_SUBSCRIBERS = 32
# Feedback messages per second to all subscribers together, with a burst allowance: enough for
# a dump of every value to a few surfaces at once, and a bound on any loop between bridges.
# Messages over the budget wait (newest value per address and target) instead of being lost.
FEEDBACK_RATE_PER_S = 2000
FEEDBACK_BURST = 500
# A repeated warning (a flood of malformed or refused messages) is logged at most once per
# interval per kind, with the count of those not logged.
LOG_INTERVAL_S = 10.0
_MAX_LOG_KINDS = 64
_MAX_FLOAT32 = 3.4028234663852886e38
# Linux's SO_RXQ_OVFL (Python names it only on some builds): the kernel then tells, with each
# datagram, how many it dropped because the receive buffer was full.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_ANCILLARY_BYTES = socket.CMSG_SPACE(4)
# The receive buffer asked for (the kernel caps it at net.core.rmem_max): room for a burst.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


def _count_kernel_drops(sock: socket.socket) -> None:
    """Ask for a larger receive buffer and for the kernel's drop count; neither is essential."""
    for option, value in ((socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES), (_SO_RXQ_OVFL, 1)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, value)
        except OSError:
            pass


# The errors a handler raises for bad input: refused with an ``error`` reply.
_REFUSALS = (ScoreBridgeError, ValueError, TypeError, IndexError, ArithmeticError)


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        if isinstance(arg, bool):
            arg = int(arg)
        if isinstance(arg, float) and math.isfinite(arg) and abs(arg) > _MAX_FLOAT32:
            builder.add_arg(arg, "d")  # beyond a 32-bit float
        else:
            builder.add_arg(arg)
    return builder.build().dgram


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _is_local(host: str) -> bool:
    """Is ``host`` an address of this machine (so ``host:port`` may be the bridge itself)?"""
    if _is_loopback(host):
        return True
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return True
    except ValueError:
        pass  # a host name (from the allow-list): resolved by bind below
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))  # only an address of this machine can be bound
        except OSError:
            return False
    return True


class _ThrottledLog:
    """Logs the first message of each kind, then at most one per ``LOG_INTERVAL_S``."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, level: int, kind: str, message: str, *args: Any, exc_info: Any = None) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < LOG_INTERVAL_S:
                self._suppressed[kind] += 1
                return
            if last is None and len(self._last) >= _MAX_LOG_KINDS:
                self._suppressed["other"] += 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more like it in the last {LOG_INTERVAL_S:.0f} s not logged)"
        log.log(level, message, *args, exc_info=exc_info)


def _shorten(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class OscServer:
    """Receives control and sends feedback. ``routes`` maps a path of the bridge's addresses
    (``subscribe``, see ``bridge.addresses``) to a handler ``(args, sender) -> reply args or
    None``; ``<slot>/<param>`` goes to ``param_handler``."""

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
        # kernel_dropped: datagrams a flood made the kernel drop before the loop read them
        self.counters: Counter[str] = Counter(kernel_dropped=0)
        self._log = _ThrottledLog()
        self.routes: dict[str, Callable[[list[Any], tuple[str, int]], Any]] = {}
        self.param_handler: Callable[[str, str, list[Any], tuple[str, int]], Any] | None = None
        # Addresses outside /scorebridge/ (surfaces bound through a control map): True = handled.
        self.external_handler: Callable[[str, list[Any], tuple[str, int]], bool] | None = None
        self.subscribers: set[tuple[str, int]] = set()
        # (address, target) -> args: the newest value each subscriber has still to be sent
        self._pending: dict[tuple[str, tuple[str, int]], tuple[Any, ...]] = {}
        self._tokens = float(FEEDBACK_BURST)
        self._tokens_at = time.monotonic()
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
        _count_kernel_drops(sock)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._running = True
        for target, name in ((self._receive_loop, "osc-in"), (self._feedback_loop, "osc-feedback")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._wake.set()
            for thread in self._threads:
                thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        self._send_sock.close()  # made with the server: closed even if it never started

    # -- receiving -------------------------------------------------------------------
    def _receive_loop(self) -> None:
        sock = self._sock
        while self._running and sock is not None:
            try:
                data, ancillary, _flags, sender = sock.recvmsg(65536, _ANCILLARY_BYTES)
                self._note_kernel_drops(ancillary)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._running:
                    self._log(logging.ERROR, "receive", "OSC receive failed: %s", exc)
                    self.counters["receive_errors"] += 1
                continue
            try:
                self.handle_datagram(data, sender)
            except Exception as exc:  # noqa: BLE001 - one datagram never ends the receive loop
                self._handler_error("datagram", exc)

    def _note_kernel_drops(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        """Datagrams the kernel dropped because the receive buffer was full (a flood faster
        than the loop): Linux reports the running total with each datagram (SO_RXQ_OVFL)."""
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(payload) >= 4:
                self.counters["kernel_dropped"] = int.from_bytes(payload[:4], sys.byteorder)

    def _handler_error(self, where: str, exc: BaseException) -> None:
        self.counters["handler_errors"] += 1
        kind = type(exc).__name__
        self._log(logging.ERROR, f"error:{kind}", "OSC %s handling failed (%s: %s); the message was "
                  "dropped and OSC goes on", where, kind, exc, exc_info=exc)

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> None:
        if not _is_loopback(sender[0]) and sender[0] not in self.allow:
            self.counters["refused"] += 1
            self._log(logging.WARNING, "refused", "OSC from %s refused: not loopback and not in the "
                      "allow-list (--osc-allow)", sender[0])
            return
        try:
            messages = parse_datagram(data)
        except MalformedPacket as exc:
            self.counters["malformed"] += 1
            self._log(logging.WARNING, "malformed", "malformed OSC packet from %s:%d (%d bytes) dropped: %s",
                      sender[0], sender[1], len(data), exc)
            return
        for message in messages:
            self.dispatch(message.address, message.args, sender)

    def dispatch(self, address: str, args: list[Any], sender: tuple[str, int],
                 reply_to: Callable[..., None] | None = None) -> None:
        """Handle one message from ``sender``; replies and errors go to ``reply_to(address, *args)``
        (default: back to the sender over UDP). The browser surface calls this too."""
        reply_to = reply_to or (lambda reply_address, *reply_args: self.send_to(sender, reply_address,
                                                                                 *reply_args))
        try:
            self._dispatch(address, args, sender, reply_to)
        except Exception as exc:  # noqa: BLE001 - the isolation boundary of every OSC/browser message
            self._handler_error(address[:100], exc)
            reply_to(full_address(ERROR),
                     f"{address}: internal error ({type(exc).__name__}); see the bridge's log")

    def _dispatch(self, address: str, args: list[Any], sender: tuple[str, int],
                  reply_to: Callable[..., None]) -> None:
        path = path_of(address)
        if path is None:
            try:
                handled = self.external_handler is not None and self.external_handler(address, args, sender)
            except _REFUSALS as exc:
                handled = True
                self.counters["rejected"] += 1
                reply_to(full_address(ERROR), f"{address}: {exc}")
            self.counters["handled" if handled else "unknown_address"] += 1
            return
        handler = None
        try:
            handler = self.routes.get(path)
            if handler is not None:
                reply = handler(args, sender)
            else:
                parts = path.strip("/").split("/")
                if len(parts) != 2 or self.param_handler is None:
                    self.counters["unknown_address"] += 1
                    self._log(logging.WARNING, "unknown", "unknown OSC address %s", _shorten(address))
                    return
                reply = self.param_handler(parts[0], parts[1], args, sender)
            self.counters["handled"] += 1
            if reply is not None:
                reply_address, *reply_args = reply
                reply_to(reply_address, *reply_args)
        except _REFUSALS as exc:
            self.counters["rejected"] += 1
            self._log(logging.WARNING, "rejected", "OSC %s %s rejected: %s", _shorten(address),
                      _shorten(args), exc)
            reply_to(full_address(ERROR), f"{address}: {exc}")
            if handler is None:  # a refused engine parameter: every surface shows it, rate-limited
                self.feedback(full_address(ERROR), f"{address}: {exc}", exclude=sender)

    # -- sending ---------------------------------------------------------------------
    def send_to(self, target: tuple[str, int], address: str, *args: Any) -> None:
        try:
            self._send_sock.sendto(build_message(address, *args), target)
            self.counters["sent"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            log.debug("OSC send to %s failed: %s", target, exc)

    def check_target(self, host: Any, port: Any) -> tuple[str, int]:
        """A feedback or reply target, or ValueError: loopback or allow-listed, a valid port, and
        not this bridge's own OSC port (which would answer itself in a loop)."""
        if not isinstance(host, str) or not host:
            raise ValueError(f"host {_shorten(host)} is not an address")
        if isinstance(port, bool) or not isinstance(port, (int, float)) or not math.isfinite(port) or port != int(port):
            raise ValueError(f"port {_shorten(port)} is not a whole number")
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is outside 1..65535")
        if not _is_loopback(host) and host not in self.allow:
            raise ValueError(f"{host} is not loopback and not in the OSC allow-list")
        if port == self.port and _is_local(host):
            raise ValueError(f"{host}:{port} is this bridge's own OSC port (it would answer itself)")
        return host, port

    def subscribe(self, host: Any, port: Any) -> None:
        target = self.check_target(host, port)
        if len(self.subscribers) >= MAX_SUBSCRIBERS and target not in self.subscribers:
            raise ValueError(f"too many OSC subscribers (limit {MAX_SUBSCRIBERS})")
        self.subscribers.add(target)

    def unsubscribe(self, host: Any, port: Any) -> None:
        target = (str(host), int(port))
        self.subscribers.discard(target)
        with self._pending_lock:
            for key in [k for k in self._pending if k[1] == target]:
                del self._pending[key]

    def feedback(self, address: str, *args: Any, exclude: tuple[str, int] | None = None) -> None:
        """Queue a value for every subscriber but ``exclude`` (the surface that sent it); only
        the newest value per address and subscriber is sent, at most once per
        ``feedback_interval_s``, within ``FEEDBACK_RATE_PER_S`` in all."""
        targets = [t for t in list(self.subscribers) if t != exclude]
        if not targets:
            return
        with self._pending_lock:
            for target in targets:
                self._pending[(address, target)] = args
        self._wake.set()

    def _budget(self) -> int:
        """Feedback messages that may be sent now (a token bucket)."""
        now = time.monotonic()
        refill = (now - self._tokens_at) * FEEDBACK_RATE_PER_S
        self._tokens = min(float(FEEDBACK_BURST), self._tokens + refill)
        self._tokens_at = now
        return int(self._tokens)

    def _feedback_loop(self) -> None:
        while self._running:
            self._wake.wait()
            self._wake.clear()
            budget = self._budget()
            with self._pending_lock:
                due = list(islice(self._pending.items(), budget))
                for key, _ in due:
                    del self._pending[key]
                if self._pending:
                    self.counters["feedback_deferred"] += len(self._pending)
                    self._wake.set()  # the rest goes out in the next rounds
            self._tokens -= len(due)
            for (address, target), args in due:
                if target in self.subscribers:
                    try:
                        self.send_to(target, address, *args)
                    except Exception as exc:  # noqa: BLE001 - one bad value never stops feedback
                        self._handler_error(f"feedback {address[:100]}", exc)
            time.sleep(self.feedback_interval_s)  # the feedback thread's own rate limit
