"""Fuzzing the OSC datagram parser (pure, property-based) and a running bridge's OSC port.

The pure properties: any bytes give a list of messages or MalformedPacket, never another
exception and never a hang; what python-osc builds parses back to the same values; bundles come
apart in order; nesting past MAX_BUNDLE_DEPTH is refused. The live run sends a mix of random,
mutated and well-formed datagrams to ``serve`` and checks that ``/scorebridge/status`` still
answers with no handler error counted.

CI runs a small, fixed-seed budget. A longer run:
``SCOREBRIDGE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz_osc.py -q``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.osc_packet import MAX_BUNDLE_DEPTH, MAX_MESSAGES, MalformedPacket, OscMessage, parse_datagram
from bridge.remote import request

EXAMPLES = int(os.environ.get("SCOREBRIDGE_FUZZ_EXAMPLES", "300"))
LIVE_EXAMPLES = max(3, EXAMPLES // 100)
FAST = settings(derandomize=True, max_examples=EXAMPLES, deadline=None)

ADDRESSES = ["/scorebridge/rule/velocity", "/scorebridge/rule/engine", "/scorebridge/rule/enabled",
             "/scorebridge/transport/locate", "/scorebridge/transport/tempo",
             "/scorebridge/transport/playing", "/scorebridge/affect/valence", "/scorebridge/subscribe",
             "/scorebridge/status",
             "/scorebridge/unsubscribe", "/scorebridge/rule/voices", "/scorebridge/nope/x", "/surface/1",
             "/scorebridge/rule", "/scorebridge/learn/cancel"]

address_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                       max_size=30).map(lambda s: "/" + s)
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
arguments = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(lambda v: ("i", v)),
    floats.map(lambda v: ("f", v)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: ("d", v)),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=40).map(lambda v: ("s", v)),
    st.binary(min_size=1, max_size=40).map(lambda v: ("b", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: ("h", v)),
    st.sampled_from([("T", True), ("F", False), ("N", None)]),
)


def build(address: str, args: list[tuple[str, object]]) -> bytes:
    builder = OscMessageBuilder(address=address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


def same(a: object, b: object) -> bool:
    """Equal, NaN included (a float argument compares by its bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def parses_or_refuses(data: bytes) -> list[OscMessage] | None:
    started = time.monotonic()
    try:
        return parse_datagram(data)
    except MalformedPacket:
        return None
    finally:
        assert time.monotonic() - started < 1.0, "parsing one datagram took over a second"


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_are_refused_as_malformed(data):
    parses_or_refuses(data)


@FAST
@given(st.binary(max_size=64), st.binary(max_size=200))
def test_any_bytes_after_a_bundle_header_parse_or_are_refused(time_tag, rest):
    parses_or_refuses(b"#bundle\x00" + time_tag.ljust(8, b"\x00")[:8] + rest)


@FAST
@given(st.sampled_from(ADDRESSES) | address_text, st.lists(arguments, max_size=6))
def test_what_python_osc_builds_parses_back_the_same(address, args):
    (message,) = parse_datagram(build(address, args))
    assert message.address == address
    assert len(message.args) == len(args)
    for (tag, sent), got in zip(args, message.args):
        if tag == "f":
            sent = struct.unpack(">f", struct.pack(">f", sent))[0]
        assert same(got, sent), (tag, sent, got)


@FAST
@given(st.sampled_from(ADDRESSES), st.lists(arguments, max_size=4), st.data())
def test_mutated_datagrams_parse_or_are_refused(address, args, data):
    datagram = bytearray(build(address, args))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "size"]))
        position = data.draw(st.integers(0, max(0, len(datagram) - 1)))
        if action == "flip" and datagram:
            datagram[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del datagram[position:]
        elif action == "insert":
            datagram[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "size" and len(datagram) >= position + 4:
            datagram[position:position + 4] = struct.pack(">i", data.draw(st.integers(-(2**31), 2**31 - 1)))
    parses_or_refuses(bytes(datagram))


def bundle_of(contents: list[object]) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for item in contents:
        if isinstance(item, list):
            inner = OscBundleBuilder(IMMEDIATELY)
            for address in item:
                inner.add_content(OscMessageBuilder(address=address).build())
            builder.add_content(inner.build())
        else:
            builder.add_content(OscMessageBuilder(address=item).build())
    return builder.build().dgram


@FAST
@given(st.lists(st.sampled_from(ADDRESSES) | st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3),
                max_size=5))
def test_bundles_come_apart_in_order(contents):
    expected = [a for item in contents for a in (item if isinstance(item, list) else [item])]
    assert [m.address for m in parse_datagram(bundle_of(contents))] == expected


def nested(depth: int) -> bytes:
    datagram = OscMessageBuilder(address="/deep").build().dgram
    for _ in range(depth):
        datagram = b"#bundle\x00" + bytes(8) + struct.pack(">i", len(datagram)) + datagram
    return datagram


# -- the fuzzers' findings, as named regressions --------------------------------------------------
def test_an_address_that_is_not_utf8_is_malformed():
    with pytest.raises(MalformedPacket, match="UTF-8"):
        parse_datagram(b"/\xff\x00\x00")


def test_a_bundle_element_with_a_negative_size_is_malformed_at_once():
    with pytest.raises(MalformedPacket, match="-4"):
        parse_datagram(b"#bundle\x00" + bytes(8) + b"\xff\xff\xff\xfc")


def test_nesting_is_bounded():
    assert [m.address for m in parse_datagram(nested(MAX_BUNDLE_DEPTH))] == ["/deep"]
    for depth in (MAX_BUNDLE_DEPTH + 1, 400, 5000):
        with pytest.raises(MalformedPacket, match="nested"):
            parse_datagram(nested(depth))


def test_blob_sizes_are_checked_against_the_bytes_left():
    for size in (-1, -4, 2**31 - 1, 5):
        datagram = b"/b\x00\x00,b\x00\x00" + struct.pack(">i", size) + b"abcd"
        with pytest.raises(MalformedPacket, match="blob size"):
            parse_datagram(datagram)


def test_a_string_argument_without_its_nul_is_malformed():
    with pytest.raises(MalformedPacket, match="NUL"):
        parse_datagram(b"/s\x00\x00,s\x00\x00abcd")


def test_a_truncated_fixed_argument_is_malformed():
    with pytest.raises(MalformedPacket, match="cut short"):
        parse_datagram(b"/i\x00\x00,id\x00\x00\x00\x00\x00\x01\x00\x00")


def test_too_many_messages_in_one_datagram_are_malformed():
    message = OscMessageBuilder(address="/a").build().dgram
    element = struct.pack(">i", len(message)) + message
    with pytest.raises(MalformedPacket, match="messages"):
        parse_datagram(b"#bundle\x00" + bytes(8) + element * (MAX_MESSAGES + 1))


def test_arrays_and_their_brackets():
    builder = OscMessageBuilder(address="/a")
    builder.add_arg([1, [2.5, "x"]])
    assert parse_datagram(builder.build().dgram)[0].args == [[1, [2.5, "x"]]]
    for tags in (b",]\x00\x00", b",[\x00\x00", b",[[[[[[]]]]]]\x00\x00\x00"):
        with pytest.raises(MalformedPacket):
            parse_datagram(b"/a\x00\x00" + tags)


# -- live: a running bridge takes the fuzz and still answers ----------------------------------------
def live_datagrams():
    well_formed = st.builds(build, st.sampled_from(ADDRESSES), st.lists(arguments, max_size=3))
    mutated = st.builds(lambda d, cut: d[:cut], well_formed, st.integers(0, 40))
    return st.lists(st.one_of(st.binary(max_size=200), well_formed, mutated,
                              st.sampled_from([nested(400), b"/\xff\x00\x00",
                                               b"#bundle\x00" + bytes(8) + b"\xff\xff\xff\xfc"])),
                    min_size=20, max_size=60)


@pytest.fixture
def fuzzed_bridge(start_bridge):
    return start_bridge("--slot", "rule=rule@all/2", "--no-web")


@settings(derandomize=True, max_examples=LIVE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(datagrams=live_datagrams())
def test_a_running_bridge_survives_osc_fuzz_and_still_answers(fuzzed_bridge, datagrams):
    bridge = fuzzed_bridge
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", bridge.osc_port))
    assert bridge.proc.poll() is None
    status = json.loads(request("127.0.0.1", bridge.osc_port, "/scorebridge/status", "/scorebridge/status",
                                timeout_s=5.0)[0])
    assert status["osc"].get("malformed", 0) > 0
    assert status["osc"].get("handler_errors", 0) == 0, status["osc"]
