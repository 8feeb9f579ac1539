"""The OSC side of the ``osc`` attack area: the messages it builds and a raw UDP surface that
sends them to ``serve`` and reads the replies (status, or ``/scorebridge/error``)."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections import Counter

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

__all__ = ["ANSWER_LIMIT_S", "Surface", "message", "nested"]

# The bridge must answer status within this long after any probe.
ANSWER_LIMIT_S = 3.0


def nested(depth: int) -> bytes:
    """A dump request inside ``depth`` bundles."""
    datagram = OscMessageBuilder(address="/scorebridge/dump").build().dgram
    for _ in range(depth):
        datagram = b"#bundle\x00" + bytes(8) + struct.pack(">i", len(datagram)) + datagram
    return datagram


def message(address: str, *args: object) -> bytes:
    """One OSC message (floats as doubles, so that NaN and 1e300 reach the bridge as they are)."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg, "d" if isinstance(arg, float) else None)
    return builder.build().dgram


class Surface:
    """A raw UDP OSC client that reads replies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.skipped: Counter[str] = Counter()  # replies read while waiting for another

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, ("127.0.0.1", self.port))

    def ask(self, address: str, *args: object, timeout_s: float = ANSWER_LIMIT_S) -> tuple[str, list] | None:
        """The /scorebridge/error or ``address`` reply to a message (None: no reply in time)."""
        self.sock.setblocking(False)
        try:
            while True:  # replies to earlier probes are not this one's
                self.sock.recv(65536)
        except (BlockingIOError, OSError):
            pass
        self.send(message(address, *args))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
                messages = OscPacket(data).messages
            except (TimeoutError, OSError):
                return None
            except Exception:  # noqa: BLE001 - a reply this client cannot parse is no answer
                continue
            for timed in messages:
                reply, params = timed.message.address, list(timed.message.params)
                if reply == address or (reply == "/scorebridge/error" and params
                                        and str(params[0]).startswith(f"{address}:")):
                    return reply, params
                self.skipped[reply] += 1
        return None

    def status(self, timeout_s: float = ANSWER_LIMIT_S) -> dict | None:
        reply = self.ask("/scorebridge/status", timeout_s=timeout_s)
        if reply is None or reply[0] != "/scorebridge/status":
            return None
        return json.loads(reply[1][0])

    def close(self) -> None:
        self.sock.close()
