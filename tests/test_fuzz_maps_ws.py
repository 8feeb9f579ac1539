"""Fuzzing the parsers of the control surfaces: control maps (generated TOML documents and byte
mutations of the shipped maps) and browser messages (``parse_message``, then a live ``serve``).

Each property is: the parser returns a valid result or raises its own error (MappingError,
MessageError), never anything else, and a live surface still answers afterwards. A fixed seed
keeps CI reproducible; a longer run raises the example count:

    SCOREBRIDGE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_maps_ws.py -q

Every finding of a longer run becomes a named test in tests/test_hardening_web.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.maps import ControlMap, dumps_map, load_map, parse_map, without_lines
from bridge.web.server import MAX_MESSAGE_BYTES, MessageError, parse_message
from core.errors import MappingError
from engines import engine_class
from midi_maps import maps_dir
from tests.test_hardening_web import surface  # noqa: F401 (fixture)

EXAMPLES = int(os.environ.get("SCOREBRIDGE_FUZZ_EXAMPLES", "0"))
SLOTS = {"rule": engine_class("rule"), "song": engine_class("rule"), "strings": engine_class("thru")}
SHIPPED = sorted(maps_dir().glob("*.toml"))


def examples(ci: int) -> int:
    return EXAMPLES or ci


# -- control maps -----------------------------------------------------------------------------
scalars = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=20), st.sampled_from(["linear", "log", "toggle", "fixed",
                                                                          "trigger", "relative_twos", "all"]))
toml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=12)
targets = st.sampled_from(["rule/velocity", "rule/key", "rule/low_note", "rule/sevenths", "rule/release_beats",
                           "song/voices", "strings/transpose", "panic", "transport/tempo", "affect/valence",
                           "rule/nope", "nope/velocity", ""])
numbers = st.one_of(st.integers(1, 127), st.floats(0.1, 100), st.integers(-10, 200), st.floats(),
                    st.integers(-2**1100, 2**1100))
plausible = {
    "cc": st.one_of(st.integers(0, 127), st.integers(-5, 200), toml_values),
    "note": st.one_of(st.integers(0, 127), st.integers(-5, 200)),
    "program": st.integers(-5, 200),
    "osc": st.one_of(st.sampled_from(["/1/fader1", "/2/push3", "/scorebridge/x", "x", "/"]), st.text(max_size=12)),
    "channel": st.one_of(st.integers(1, 16), st.integers(-1, 18), st.just("all"), toml_values),
    "scale": st.one_of(st.sampled_from(["linear", "log", "toggle", "momentary", "trigger", "fixed", "relative_twos",
                                        "relative_signed", "relative_offset"]), toml_values),
    "min": numbers, "max": numbers, "step": numbers, "in_min": numbers, "in_max": numbers,
    "value": st.one_of(st.sampled_from(["C", "Am", "thru", "rule", ""]), numbers, scalars, toml_values),
    "values": st.one_of(st.lists(st.sampled_from(["C", "Am", "G", "x", 1, True]), max_size=4), toml_values),
    "feedback": st.one_of(st.booleans(), toml_values),
    "label": st.one_of(st.text(max_size=20), toml_values),
    "extra": toml_values,
}
_SOURCE_KEYS = ("cc", "note", "program", "osc")
_OTHER_KEYS = sorted(set(plausible) - set(_SOURCE_KEYS))


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly one source, a target and a few other keys, so that many tables are valid (and round-trip)."""
    keys = [draw(st.sampled_from(_SOURCE_KEYS)), *draw(st.lists(st.sampled_from(_OTHER_KEYS), max_size=3, unique=True))]
    if draw(st.sampled_from([False] * 9 + [True])):  # (hypothesis favours the ends of integer ranges)
        keys.append(draw(st.sampled_from(_SOURCE_KEYS)))
    table = {key: draw(plausible[key]) for key in keys}
    if draw(st.sampled_from([True] * 19 + [False])):
        table["target"] = draw(targets)
    return table


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five (st.one_of would pick each about as often)."""
    return st.sampled_from([True] * 4 + [False]).flatmap(lambda pick: good if pick else bad)


headers = mostly(st.fixed_dictionaries({"name": st.text(max_size=20)},
                                       optional={"description": st.text(max_size=40), "feedback": st.booleans()}),
                 st.dictionaries(st.sampled_from(["name", "description", "feedback", "other"]), toml_values,
                                 max_size=3))
documents = mostly(st.fixed_dictionaries({"map": headers, "bind": st.lists(tables(), min_size=1, max_size=6)}),
                   st.dictionaries(st.sampled_from(["map", "bind", "extra"]), toml_values, max_size=3))


def check_map(text: str, path: str = "fuzz.toml") -> ControlMap | None:
    """Parse; a valid map must round-trip through dumps_map to the same bindings."""
    try:
        control_map = parse_map(text, path, SLOTS)
    except MappingError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return None
    for binding in control_map.bindings:  # what a map holds is finite
        numbers = [binding.minimum, binding.maximum, binding.step, binding.in_min, binding.in_max, binding.value,
                   *binding.values]
        assert all(math.isfinite(n) for n in numbers if isinstance(n, float)), binding
    again = parse_map(dumps_map(control_map), path, SLOTS)
    assert without_lines(again.bindings) == without_lines(control_map.bindings)
    return control_map


@settings(derandomize=True, max_examples=examples(100), deadline=None)
@given(documents)
def test_generated_maps_load_or_fail_with_a_mapping_error(document: dict[str, Any]):
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):  # not representable in TOML (e.g. a NaN key): nothing to parse
        return
    check_map(text)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: overwrite, insert, delete, duplicate a span, deep brackets."""
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] = value
        elif kind == 1:
            out[at:at] = bytes([value])
        elif kind == 2:
            del out[at:at + value % 16 + 1]
        elif kind == 3:
            out[at:at] = out[at:at + value + 1]
        else:  # a value replaced by deep brackets (after the n-th "=")
            equals = [i for i, byte in enumerate(out) if byte == ord("=")]
            at = equals[position % len(equals)] + 1 if equals else at
            out[at:at] = b" " + b"[" * (value * 8) + b"]" * (value * 8 if value % 2 else 0) + b","
    return bytes(out)


@settings(derandomize=True, max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SHIPPED),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_shipped_maps_load_or_fail_with_a_mapping_error(tmp_path: Path, shipped: Path,
                                                                edits: list[tuple[int, int, int]]):
    path = tmp_path / "mutated.toml"
    path.write_bytes(mutate(shipped.read_bytes(), edits))
    try:
        control_map = load_map(path, SLOTS)
    except MappingError as exc:
        assert "mutated.toml" in str(exc) and "\n" not in str(exc).strip()
        return
    check_map(dumps_map(control_map))


# -- browser messages -------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=3)),
                           max_leaves=20)
addresses = st.sampled_from(["/scorebridge/rule/velocity", "/scorebridge/rule/key", "/scorebridge/rule/voices",
                             "/scorebridge/rule/sevenths", "/scorebridge/transport/tempo",
                             "/scorebridge/transport/locate", "/scorebridge/affect/valence", "/scorebridge/panic",
                             "/scorebridge/describe", "/scorebridge/nope", "/surface/pad/3", "/x", "", "no-slash"])
messages = st.one_of(
    st.fixed_dictionaries({"address": addresses, "args": st.lists(json_values, max_size=4)}),
    st.fixed_dictionaries({"address": json_values}, optional={"args": json_values}),
    json_values)


def encoded(message: Any, style: int) -> str:
    """JSON text as a browser, a careless client or an attacker would write it."""
    text = json.dumps(message, allow_nan=True)
    if style == 1:
        return text.replace("1", "Infinity", 1)
    if style == 2:
        return "[" * 300 + text + "]" * 300
    if style == 3:
        return text[: len(text) // 2]
    return text


def valid_arg(value: Any) -> bool:
    if isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -2**63 <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


@settings(derandomize=True, max_examples=examples(150), deadline=None)
@given(messages, st.integers(0, 3), st.booleans())
def test_any_message_parses_or_fails_with_a_message_error(message: Any, style: int, as_bytes: bool):
    text = encoded(message, style)
    try:
        address, args = parse_message(text.encode() if as_bytes else text)
    except MessageError as exc:
        assert str(exc)
        return
    assert isinstance(address, str) and all(valid_arg(a) for a in args)
    if style == 0:
        assert address == message["address"] and args == message.get("args", [])


@settings(derandomize=True, max_examples=examples(150), deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b'{"address": "/x", "args": [', b"[" * 2000]))
def test_any_bytes_parse_or_fail_with_a_message_error(data: bytes, prefix: bytes):
    try:
        address, args = parse_message(prefix + data)
    except MessageError as exc:
        assert str(exc)  # the property: a message error that says what is wrong, no other exception
        return
    assert isinstance(address, str) and all(valid_arg(a) for a in args)


def test_messages_at_the_size_limit_are_still_parsed():
    padding = "a" * (MAX_MESSAGE_BYTES - 40)
    assert parse_message(json.dumps({"address": "/x", "args": [padding]}))[1] == [padding]


# -- HTTP requests to an in-process surface ---------------------------------------------------
path_parts = st.sampled_from(["/", "/ws", "/index.html", "/app.js", "..", "%2e%2e", "//", "[", "]", "?", "#", "%",
                              "token=", "&", "\\", "%00", ";", "@", ":", "é"])
header_names = st.sampled_from(["Host", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key",
                                "Sec-WebSocket-Version", "Content-Length", "X-Other"])
header_values = st.one_of(st.sampled_from(["127.0.0.1", "localhost", "[::1]", "evil.example", "http://[", "null",
                                           "websocket", "Upgrade", "dGhlIHNhbXBsZSBub25jZQ==", "13", "-1", ""]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))


def test_any_request_gets_an_answer_never_a_server_error(surface, caplog):  # noqa: F811
    from tests.test_hardening_web import raw_socket

    web = surface()

    @settings(derandomize=True, max_examples=examples(100), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(path_parts, max_size=6).map("".join), st.lists(st.tuples(header_names, header_values), max_size=8))
    def request_one(path: str, headers: list[tuple[str, str]]) -> None:
        request = f"GET /{path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        sock = raw_socket(web)
        try:
            sock.sendall(request.encode())
            sock.settimeout(6)
            answer = sock.recv(4096)
        finally:
            sock.close()
        assert not answer.startswith(b"HTTP/1.1 5") or answer.startswith(b"HTTP/1.1 503"), (request, answer)
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR], request

    request_one()


# -- a live serve -----------------------------------------------------------------------------
@pytest.mark.jack
def test_live_surface_survives_fuzzed_frames_and_still_answers(start_bridge):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from tests.test_web import socket_url

    bridge = start_bridge("--web-port", "0", "--map", "browser")
    url = socket_url(bridge)
    state: dict[str, Any] = {"ws": connect(url, max_size=None, legacy=True), "reconnects": 0}

    @settings(derandomize=True, max_examples=examples(100), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(messages, st.integers(0, 3), st.booleans())
    def send_one(message: Any, style: int, binary: bool) -> None:
        text = encoded(message, style)
        try:
            state["ws"].send(text.encode() if binary else text)
        except ConnectionClosed:  # the server may close a connection (not die): open another
            state["ws"] = connect(url, max_size=None, legacy=True)
            state["reconnects"] += 1

    try:
        send_one()
        ws = state["ws"]
        ws.send(json.dumps({"address": "/scorebridge/rule/velocity", "args": [33]}))
        ws.send(json.dumps({"address": "/scorebridge/rule/voices", "args": [9]}))
        deadline, seen = time.monotonic() + 5, {}
        while time.monotonic() < deadline and "outside" not in str(seen.get("/scorebridge/error")):
            try:
                seen.update({a: v for a, v in json.loads(ws.recv(timeout=1))})
            except TimeoutError:
                continue
        assert "outside 3..4" in str(seen.get("/scorebridge/error"))  # the same connection still answers
        assert state["reconnects"] == 0
    finally:
        state["ws"].close()
    with connect(url) as fresh:  # and a new browser gets the page's state
        assert any(address == "/scorebridge/describe" for address, _ in json.loads(fresh.recv(timeout=5)))
    _, _, err = bridge.stop()
    assert "Traceback" not in err and "connection handler failed" not in err
