"""When the bridge takes the JACK server for gone. Doing so closes every port: the connections
the user made are cut, with the notes sounding there. A loaded server refuses listing clients
(``jack_lsp`` fails, several times in a row on a loaded machine), so listings alone are not
enough while libjack still serves the bridge's own client. Pure logic: the listing and the
watching client are faked; ``test_commands`` loses a real server."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from bridge import session_ports
from bridge.clock import Transport
from bridge.config import BridgeConfig
from bridge.host import EngineHost
from bridge.output import NoteTracker, Scheduler
from bridge.router import InputRouter
from bridge.session_ports import JACK_LOST_AFTER_MISSES, SessionPorts


@pytest.fixture
def ports(monkeypatch) -> SessionPorts:
    transport = Transport(120.0, "internal")
    host = EngineHost(transport, NoteTracker(), Scheduler())
    ports = SessionPorts(BridgeConfig(), transport=transport, tracker=host.tracker, scheduler=host.scheduler,
                         host=host, router=InputRouter(host, transport), controls=None)  # type: ignore[arg-type]
    ports.backend = SimpleNamespace(name="jack")  # type: ignore[assignment]
    ports.main_out = SimpleNamespace(closed=False)  # type: ignore[assignment]
    ports.lost = []  # type: ignore[attr-defined]
    monkeypatch.setattr(ports, "_jack_lost", lambda: ports.lost.append(True))
    monkeypatch.setattr(ports, "_jack_back", lambda: None)
    monkeypatch.setattr(session_ports, "jack_connections", lambda: None)  # every listing fails
    return ports


def _watcher(gone: bool) -> SimpleNamespace:
    event = threading.Event()
    if gone:
        event.set()
    return SimpleNamespace(server_gone=event, close=lambda: None)


def test_failed_listings_do_not_lose_a_server_that_still_serves_the_bridge(ports):
    ports._connection_watcher = _watcher(gone=False)
    for _ in range(10 * JACK_LOST_AFTER_MISSES):
        ports._check_jack()
    assert ports.lost == []


def test_failed_listings_lose_the_server_once_libjack_says_it_went(ports):
    ports._connection_watcher = _watcher(gone=True)
    for _ in range(JACK_LOST_AFTER_MISSES):
        ports._check_jack()
    assert ports.lost == [True]


def test_without_a_watching_client_failed_listings_alone_lose_the_server(ports):
    # (libjack could not be loaded: the listings are all there is)
    for _ in range(JACK_LOST_AFTER_MISSES - 1):
        ports._check_jack()
    assert ports.lost == []
    ports._check_jack()
    assert ports.lost == [True]
