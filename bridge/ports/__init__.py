"""MIDI port backends, found through a registry with availability probes."""

from __future__ import annotations

import logging

import rtmidi

from bridge.jack import PrivateJackServer, reap_orphaned_private_jack
from bridge.ports.base import InputHandler, InputPort, OutputPort
from bridge.ports.rtmidi_backend import JACK_POLL_INTERVAL_S, RtMidiBackend
from core.errors import BackendError

__all__ = [
    "InputHandler",
    "InputPort",
    "OutputPort",
    "RtMidiBackend",
    "BACKENDS",
    "get_backend",
    "select_backend",
]

log = logging.getLogger(__name__)

BACKENDS: dict[str, RtMidiBackend] = {
    "alsa": RtMidiBackend("alsa", rtmidi.API_LINUX_ALSA),
    "jack": RtMidiBackend("jack", rtmidi.API_UNIX_JACK, poll_interval_s=JACK_POLL_INTERVAL_S),
    "coremidi": RtMidiBackend("coremidi", rtmidi.API_MACOSX_CORE),
    "winmm": RtMidiBackend("winmm", rtmidi.API_WINDOWS_MM, virtual_ports=False),
}


def get_backend(name: str) -> RtMidiBackend:
    """The backend called ``name``, if it works here; the error lists every valid name."""
    if name not in BACKENDS:
        raise BackendError(f"unknown MIDI backend {name!r}; valid: auto, {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    ok, why = backend.available()
    if not ok:
        raise BackendError(f"MIDI backend {name!r} is not usable here: {why}")
    return backend


def select_backend(name: str) -> tuple[RtMidiBackend, PrivateJackServer | None]:
    """Resolve ``--backend``. ``auto`` takes the ALSA sequencer when present, else a running
    JACK server, else CoreMIDI/WinMM, else starts a private JACK server with the dummy driver."""
    if name != "auto":
        return get_backend(name), None
    # A private server left running by a bridge that was killed would otherwise be taken for
    # the user's own server, used, and never stopped.
    reap_orphaned_private_jack()
    reasons = []
    for candidate in ("alsa", "jack", "coremidi", "winmm"):
        ok, why = BACKENDS[candidate].available()
        if ok:
            return BACKENDS[candidate], None
        reasons.append(why)
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        raise BackendError("no MIDI backend works here: " + "; ".join(reasons))
    server = PrivateJackServer()
    server.start()
    log.warning("no ALSA sequencer and no running JACK server: started a private JACK server "
                "with the dummy driver; connect clients to it with JACK tools")
    return BACKENDS["jack"], server
