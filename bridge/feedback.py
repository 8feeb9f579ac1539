"""Feedback: every change, from any source, reaches every surface, without loops.

``FeedbackBus.publish(address, args, origin)`` fans a change out to its sinks: the OSC
subscribers, the browser surface, and ``ControlFeedback``, which turns changes into CC / note
values for controllers with LEDs or motor faders (and into map-address values for OSC surfaces
bound through a map). Each sink is rate-limited (newest value per address or control, at most
one send per interval). A knob or fader that caused a change is not sent it back: its position
already shows it, and echoing invites feedback loops with motor faders. Pads and relative
encoders, which do not know the state, do get it back.

An origin names where a change came from: ``("osc", host, port)``, ``("web", client_id)``,
``("midi", source, channel, number)`` or None (the bridge itself, e.g. an engine swap).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bridge.addresses import path_of
from bridge.maps import Binding, Target
from bridge.ports.base import OutputPort
from core.errors import PortError

__all__ = ["ControlFeedback", "FeedbackBus", "Origin", "Sink"]

log = logging.getLogger(__name__)

Origin = tuple[Any, ...] | None
Sink = Callable[[str, tuple[Any, ...], Origin], None]
ControlKey = tuple[str, int, int]  # (source, channel 0..15, number)


class FeedbackBus:
    """Fans changes out to every sink; a failing sink is logged and counted, never fatal."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self.published = 0
        self.sink_errors = 0

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def publish(self, address: str, args: tuple[Any, ...], origin: Origin = None) -> None:
        self.published += 1
        for sink in list(self._sinks):
            try:
                sink(address, args, origin)
            except (PortError, OSError, ValueError, RuntimeError) as exc:
                self.sink_errors += 1
                log.warning("feedback of %s failed: %s", address, exc)


def _same_control(binding: Binding, origin: Origin) -> bool:
    """Did ``origin`` come from the absolute control (knob, fader) behind ``binding``? Its position
    already shows the value, and a motor fader fed its own value fights the hand. Pads (toggle,
    fixed value, momentary) and relative encoders do not know the state: they get it back."""
    if not origin or binding.scale not in ("linear", "log"):
        return False
    if origin[0] == "midi" and binding.source != "osc":
        _, source, channel, number = origin
        return binding.source == source and binding.number == number and binding.channel in (None, channel)
    return False


class ControlFeedback:
    """Sends changes back to controllers (CC / note-on values) and to map-bound OSC addresses.

    ``lookup(target_path)`` gives the bindings driving a target with their resolved targets;
    ``port()`` the feedback output (None while there is none); ``osc_out(address, value,
    origin)`` delivers a map-address value to OSC subscribers and browsers.
    """

    def __init__(
        self,
        lookup: Callable[[str], list[tuple[Binding, Target]]],
        port: Callable[[], OutputPort | None],
        osc_out: Callable[[str, float, Origin], None],
        interval_s: float = 0.02,
    ) -> None:
        self._lookup = lookup
        self._port = port
        self._osc_out = osc_out
        self.interval_s = interval_s
        self.counters: Counter[str] = Counter()
        self._pending: dict[ControlKey, int] = {}
        self._last: dict[ControlKey, int] = {}  # what each control shows now, as far as we know
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="ctl-feedback", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def control_moved(self, key: ControlKey, raw: int, absolute: bool) -> None:
        """A control reported ``raw``. An absolute one (knob, fader) shows that value now, so it
        need not be sent; what a pad or encoder shows after a press is unknown, so the next
        value is sent whatever was sent before."""
        with self._lock:
            if absolute:
                self._last[key] = raw
                self._pending.pop(key, None)
            else:
                self._last.pop(key, None)

    def __call__(self, address: str, args: tuple[Any, ...], origin: Origin) -> None:
        path = path_of(address)
        if path is None or len(args) != 1:
            return
        queued = False
        for binding, target in self._lookup(path):
            if not binding.feedback or _same_control(binding, origin):
                continue
            raw = binding.raw_for(target, args[0])
            if raw is None:
                continue
            if binding.source == "osc":
                self._osc_out(str(binding.number), _osc_value(binding, raw), origin)
                continue
            key = (binding.source, binding.channel or 0, int(binding.number))
            with self._lock:
                self._pending[key] = raw
            queued = True
        if queued:
            self._wake.set()

    def _run(self) -> None:
        while self._running:
            self._wake.wait()
            self._wake.clear()
            if not self._running:
                return
            with self._lock:
                pending, self._pending = self._pending, {}
                due = {k: v for k, v in pending.items() if self._last.get(k) != v}
                self.counters["coalesced_or_unchanged"] += len(pending) - len(due)
                self._last.update(due)
            port = self._port()
            for (source, channel, number), raw in due.items():
                status = (0xB0 if source == "cc" else 0x90) | channel
                if port is None or port.closed:
                    self.counters["no_port"] += 1
                    continue
                try:
                    port.send_bytes([status, number, raw])
                    self.counters["sent"] += 1
                except PortError as exc:
                    self.counters["send_errors"] += 1
                    log.debug("control feedback failed: %s", exc)
            time.sleep(self.interval_s)  # this thread's own rate limit


def _osc_value(binding: Binding, raw: int) -> float:
    """A 0..127 control value in the OSC source's declared input range."""
    return binding.in_min + (binding.in_max - binding.in_min) * raw / 127
