"""The client side of the ``web`` attack area: raw HTTP requests and a WebSocket client on a
plain socket, so that requests and frames can be anything a hostile client sends."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import time
from typing import Any

__all__ = ["RawClient", "connect", "frame", "read_until_closed", "request", "upgrade"]


def connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    """A TCP connection to the bridge's browser surface on loopback."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
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


def request(port: int, raw: bytes, seconds: float = 12.0) -> tuple[int | None, bytes, bool]:
    """Send raw HTTP; (status or None, body, closed within ``seconds``)."""
    sock = connect(port)
    try:
        sock.sendall(raw)
    except OSError:
        return None, b"", True
    data, closed = read_until_closed(sock, seconds)
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(found.group(1)) if found else None), body, closed


def upgrade(path: str = "/ws", host: str = "127.0.0.1", origin: str | None = None) -> bytes:
    """A WebSocket opening handshake for ``path`` with the Host (and Origin) a probe names."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Origin: {origin}\r\n" if origin is not None else "") + "\r\n").encode()


def frame(payload: bytes, opcode: int = 1, fin: bool = True, claimed: int | None = None) -> bytes:
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


class RawClient:
    """A WebSocket client on a plain socket, so frames can be anything."""

    def __init__(self, port: int, path: str = "/ws", receive_buffer: int | None = None) -> None:
        self.sock = connect(port, receive_buffer)
        self.buffer = b""
        try:
            self.sock.sendall(upgrade(path))
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
            self.sock.sendall(frame(data, opcode, **kwargs))
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
            while self._oneframe():
                pass
            if self.close_code is not None:
                return False
        return True

    def _oneframe(self) -> bool:
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
