"""A strict parser of OSC datagrams from the network.

python-osc's packet parser trusts its input: a bundle element with a negative size loops
forever, deep bundle nesting ends in RecursionError and an address that is not UTF-8 raises
UnicodeDecodeError. This parser checks every size against the bytes that remain, bounds the
nesting and the number of messages, and reports any fault as ``MalformedPacket`` (a
ValueError) naming the byte offset. Fixed-size arguments are decoded with python-osc's own
decoders; strings, blobs and time tags, where python-osc does not check enough, are decoded here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pythonosc.parsing import osc_types
from pythonosc.parsing.osc_types import ParseError

__all__ = ["MalformedPacket", "OscMessage", "parse_datagram", "MAX_BUNDLE_DEPTH", "MAX_MESSAGES",
           "MAX_ARRAY_DEPTH"]

# Bundles inside bundles: real senders nest one or two deep; the bound keeps parsing iterative
# in spirit and far from Python's recursion limit.
MAX_BUNDLE_DEPTH = 8
# Messages in one datagram (at most 64 KiB, and the smallest message takes 8 bytes): more
# than any surface sends at once, few enough that one datagram cannot monopolise the handler.
MAX_MESSAGES = 1024
# Nested ``[`` ``]`` arrays in one type tag string.
MAX_ARRAY_DEPTH = 4

_BUNDLE_HEADER = b"#bundle\x00"
_FIXED: dict[str, tuple[Any, int]] = {
    "i": (osc_types.get_int, 4),
    "f": (osc_types.get_float, 4),
    "h": (osc_types.get_int64, 8),
    "d": (osc_types.get_double, 8),
    "r": (osc_types.get_rgba, 4),
    "m": (osc_types.get_midi, 4),
}
_CONSTANTS: dict[str, Any] = {"T": True, "F": False, "N": None}


class MalformedPacket(ValueError):
    """A datagram that is not a valid OSC packet; the message names the byte offset."""


@dataclass(frozen=True)
class OscMessage:
    address: str
    args: list[Any]


def parse_datagram(data: bytes) -> list[OscMessage]:
    """Every message of a datagram (a message or a bundle), in order; raises MalformedPacket."""
    messages: list[OscMessage] = []
    # (start, end, depth) of the packets still to read: bundles are walked without recursion.
    pending: list[tuple[int, int, int]] = [(0, len(data), 0)]
    while pending:
        start, end, depth = pending.pop()
        if data.startswith(_BUNDLE_HEADER, start):
            pending.extend(reversed(_bundle_elements(data, start, end, depth)))
        else:
            messages.append(_message(data, start, end))
            if len(messages) > MAX_MESSAGES:
                raise MalformedPacket(f"more than {MAX_MESSAGES} messages in one datagram")
    return messages


def _bundle_elements(data: bytes, start: int, end: int, depth: int) -> list[tuple[int, int, int]]:
    if depth >= MAX_BUNDLE_DEPTH:
        raise MalformedPacket(f"byte {start}: bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    index = start + len(_BUNDLE_HEADER) + 8  # the time tag: every message is handled on arrival
    if index > end:
        raise MalformedPacket(f"byte {start}: bundle shorter than its header and time tag")
    elements = []
    while index < end:
        if index + 4 > end:
            raise MalformedPacket(f"byte {index}: bundle element size cut short")
        (size,) = struct.unpack_from(">i", data, index)
        index += 4
        if size <= 0 or size % 4 or index + size > end:
            raise MalformedPacket(f"byte {index - 4}: bundle element size {size} is not a positive "
                                  f"multiple of 4 within the {end - index} bytes left")
        elements.append((index, index + size, depth + 1))
        index += size
    return elements


def _string(data: bytes, index: int, end: int, what: str) -> tuple[str, int]:
    """An OSC string: UTF-8 up to a NUL, padded with NULs to a multiple of 4 bytes."""
    nul = data.find(b"\x00", index, end)
    if nul < 0:
        raise MalformedPacket(f"byte {index}: {what} has no terminating NUL")
    following = nul + 4 - (nul - index) % 4
    if following > end:
        raise MalformedPacket(f"byte {index}: {what} padding runs past the end")
    try:
        return data[index:nul].decode("utf-8"), following
    except UnicodeDecodeError:
        raise MalformedPacket(f"byte {index}: {what} is not UTF-8") from None


def _blob(data: bytes, index: int, end: int) -> tuple[bytes, int]:
    if index + 4 > end:
        raise MalformedPacket(f"byte {index}: blob size cut short")
    (size,) = struct.unpack_from(">i", data, index)
    start = index + 4
    following = start + size + (-size % 4)
    if size < 0 or following > end:
        raise MalformedPacket(f"byte {index}: blob size {size} is outside the {end - start} bytes left")
    return bytes(data[start:start + size]), following


def _message(data: bytes, start: int, end: int) -> OscMessage:
    address, index = _string(data, start, end, "address")
    if not address.startswith("/"):
        raise MalformedPacket(f"byte {start}: address {address[:40]!r} does not start with '/'")
    if index == end:
        return OscMessage(address, [])  # no type tag string: a message without arguments
    tags, index = _string(data, index, end, "type tag string")
    if not tags.startswith(","):
        raise MalformedPacket(f"byte {index}: type tag string does not start with ','")
    args: list[Any] = []
    stack = [args]
    for tag in tags[1:]:
        if tag in _FIXED:
            decode, size = _FIXED[tag]
            if index + size > end:
                raise MalformedPacket(f"byte {index}: argument '{tag}' cut short")
            try:
                value, index = decode(data, index)
            except (ParseError, struct.error) as exc:
                raise MalformedPacket(f"byte {index}: argument '{tag}': {exc}") from None
        elif tag in ("s", "S"):
            value, index = _string(data, index, end, "string argument")
        elif tag == "c":
            if index + 4 > end:
                raise MalformedPacket(f"byte {index}: argument 'c' cut short")
            (code,) = struct.unpack_from(">I", data, index)
            if code > 0x10FFFF:
                raise MalformedPacket(f"byte {index}: character {code} is not a Unicode code point")
            value, index = chr(code), index + 4
        elif tag == "b":
            value, index = _blob(data, index, end)
        elif tag == "t":
            if index + 8 > end:
                raise MalformedPacket(f"byte {index}: time tag cut short")
            (value,) = struct.unpack_from(">Q", data, index)  # raw NTP time; no handler uses it
            index += 8
        elif tag in _CONSTANTS:
            value = _CONSTANTS[tag]
        elif tag == "[":
            if len(stack) > MAX_ARRAY_DEPTH:
                raise MalformedPacket(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
            array: list[Any] = []
            stack[-1].append(array)
            stack.append(array)
            continue
        elif tag == "]":
            if len(stack) < 2:
                raise MalformedPacket("']' without '[' in the type tag string")
            stack.pop()
            continue
        else:
            raise MalformedPacket(f"unknown argument type {tag!r}")
        stack[-1].append(value)
    if len(stack) != 1:
        raise MalformedPacket("'[' without ']' in the type tag string")
    return OscMessage(address, args)
