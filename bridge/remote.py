"""A client of a running bridge's OSC surface: one request, one reply (``scorebridge status``,
``panic`` and ``doctor`` use it, as do the tests and benchmarks)."""

from __future__ import annotations

import socket
import time
from typing import Any

from bridge.osc import PREFIX, build_message
from bridge.osc_packet import MalformedPacket, parse_datagram
from core.errors import ScoreBridgeError

__all__ = ["request"]


def request(host: str, port: int, address: str, reply_address: str, *args: Any,
            timeout_s: float = 2.0) -> list[Any]:
    """Send one OSC message and wait for the bridge's reply at ``reply_address`` (other
    datagrams, malformed ones included, are skipped until the timeout)."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
            sock.sendto(build_message(address, *args), (host, port))
        except OSError as exc:
            raise ScoreBridgeError(f"cannot send to {host}:{port}: {exc}") from None
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                raise ScoreBridgeError(f"no bridge answered on {host}:{port} within {timeout_s} s "
                                       "(is `scorebridge serve` running? check --osc-port)") from None
            except OSError as exc:  # e.g. the port is closed (ICMP port unreachable)
                raise ScoreBridgeError(f"no bridge answered on {host}:{port}: "
                                       f"{exc.strerror or exc}") from None
            try:
                messages = parse_datagram(data)
            except MalformedPacket:
                continue
            for message in messages:
                if message.address == reply_address:
                    return message.args
                if message.address == f"{PREFIX}/error":
                    raise ScoreBridgeError(f"bridge refused: {message.args[0] if message.args else ''}")
