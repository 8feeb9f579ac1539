"""Shared fixtures: one private JACK server (dummy driver) per test session, real clients."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.jackutil import start_jack
from tests.peer import Bridge, Peer

_counter = itertools.count()


@pytest.fixture(scope="session")
def jack_server():
    name = f"sbtest{os.getpid()}"
    proc = start_jack(name)
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    yield name
    proc.terminate()
    proc.wait(timeout=10)
    if old is None:
        os.environ.pop("JACK_DEFAULT_SERVER", None)
    else:
        os.environ["JACK_DEFAULT_SERVER"] = old


@pytest.fixture
def start_bridge(jack_server):
    started: list[Bridge] = []

    def start(*args: str) -> Bridge:
        bridge = Bridge(f"sb{os.getpid()}x{next(_counter)}", *args)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


@pytest.fixture
def peer_for():
    peers: list[Peer] = []

    def make(bridge: Bridge, out_port: str | None = None) -> Peer:
        peer = Peer(f"peer{next(_counter)}", bridge.client, out_port)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()
