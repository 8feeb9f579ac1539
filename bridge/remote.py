"""Commands that talk to a running bridge over OSC (panic, status) or, for panic, straight to
MIDI outputs when no bridge answers."""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import time
from typing import Any

from core.errors import ScoreBridgeError
from bridge.osc import PREFIX, build_message
from bridge.osc_packet import MalformedPacket, parse_datagram

__all__ = ["request", "panic", "status"]


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


def panic(args: argparse.Namespace) -> int:
    if args.midi:
        return _panic_midi(args.midi, args.backend)
    released = request(args.osc_host, args.osc_port, f"{PREFIX}/panic", f"{PREFIX}/panic/done")
    count = released[0] if released else 0
    print(f"panic: bridge released {count} notes and sent All Notes Off on all channels")
    return 0


def _panic_midi(pattern: str, backend_name: str) -> int:
    from bridge.output import all_notes_off
    from bridge.ports import select_backend

    backend, private = select_backend(backend_name)
    try:
        targets = [n for n in backend.list_outputs() if re.search(pattern, n, re.IGNORECASE)]
        if not targets:
            raise ScoreBridgeError(f"no MIDI output matches {pattern!r}; present: {backend.list_outputs()}")
        for name in targets:
            port = backend.connect_output("scorebridge-panic", name)
            try:
                for message in all_notes_off():
                    port.send(message)
            finally:
                port.close()
            print(f"panic: All Notes Off on all channels of {name}")
    finally:
        if private is not None:
            private.stop()
    return 0


def status(args: argparse.Namespace) -> int:
    reply = request(args.osc_host, args.osc_port, f"{PREFIX}/status", f"{PREFIX}/status")
    try:
        report = json.loads(reply[0])
    except (IndexError, TypeError, ValueError, RecursionError):
        raise ScoreBridgeError(f"the reply on {args.osc_host}:{args.osc_port} is not a bridge "
                               "status") from None
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0
