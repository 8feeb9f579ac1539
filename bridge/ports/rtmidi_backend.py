"""python-rtmidi ports: ALSA sequencer, JACK, CoreMIDI and WinMM behind one interface."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rtmidi

from bridge.jack import jack_running
from bridge.ports.base import InputHandler, InputPort, OutputPort
from core.errors import BackendError, PortError

__all__ = ["RtMidiBackend", "RtMidiInput", "RtMidiOutput", "JACK_POLL_INTERVAL_S", "RTMIDI_QUEUE_LIMIT",
           "JACK_OUTPUT_BURST", "JACK_OUTPUT_WINDOW_S"]

# How often the JACK input thread looks for queued messages (adds 0.1 ms on average).
JACK_POLL_INTERVAL_S = 0.0002
# Times the JACK backend asks for the server before calling it absent (a loaded server
# sometimes refuses a single listing client).
JACK_PROBE_ATTEMPTS = 3
# Messages the JACK input thread reads before it looks at its stop flag again.
_POLL_BATCH = 256
# Messages rtmidi holds for the input thread. rtmidi drops what does not fit, without saying
# so and without regard to what it is (a note-off as well as a controller), before the
# bridge's own note-safe queues see it: sized for half a second of a 125,000 messages/s
# flood (about 4 MB at most).
RTMIDI_QUEUE_LIMIT = 65536
# rtmidi's JACK output writes everything queued into the port's buffer at the next cycle and
# drops what does not fit (about 127 short messages at a 64-frame period), note-offs included.
# The bridge sends at most this many messages per window: 96 in a 64-frame cycle at 48 kHz,
# and a longer period has a proportionally larger buffer. 64,000 messages/s is far above
# what music needs; a sender beyond it waits (backpressure on the engine that sends).
JACK_OUTPUT_BURST = 32
JACK_OUTPUT_WINDOW_S = 0.0005


class RtMidiOutput(OutputPort):
    """An rtmidi output; ``paced`` (JACK) spreads bursts over JACK's cycles (see
    ``JACK_OUTPUT_BURST``). ``send`` holds the port's lock, so the pace is the port's."""

    def __init__(self, name: str, midi_out: Any, paced: bool = False) -> None:
        super().__init__(name)
        self._out = midi_out
        self._paced = paced
        # when the last JACK_OUTPUT_BURST messages went out (taken after each send): a send waits
        # until the oldest is a window old, so no JACK_OUTPUT_BURST + 1 consecutive messages fall
        # inside one window, whenever the sending thread is preempted
        self._sent: deque[float] = deque(maxlen=JACK_OUTPUT_BURST)

    def _send(self, data: list[int]) -> None:
        if not self._paced:
            self._out.send_message(data)
            return
        if len(self._sent) == JACK_OUTPUT_BURST:
            while (wait := self._sent[0] + JACK_OUTPUT_WINDOW_S - time.perf_counter()) > 0:
                time.sleep(wait)
        self._out.send_message(data)
        self._sent.append(time.perf_counter())

    def _close(self) -> None:
        self._out.close_port()
        self._out.delete()


class RtMidiInput(InputPort):
    """An rtmidi input delivered by callback, or by a polling thread (``poll_interval_s``).

    JACK runs rtmidi's input callback inside its real-time process cycle, where a Python
    callback must wait for the GIL; a late cycle corrupts the MIDI stream (events dropped or
    delivered twice under load). On JACK the bridge therefore lets rtmidi queue messages
    lock-free and reads them from its own thread, which never blocks JACK."""

    def __init__(self, name: str, midi_in: Any, handler: InputHandler, poll_interval_s: float | None = None) -> None:
        super().__init__(name, handler)
        self._in = midi_in
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll_interval_s = poll_interval_s
        # (cutoff_s, action) of ``after_input_before``, run by the reading thread
        self._waiters: list[tuple[float, Callable[[], None]]] = []
        self._waiters_lock = threading.Lock()
        # SysEx and clock are needed (clock) or must be counted (SysEx floods); active sensing
        # carries nothing the bridge uses.
        midi_in.ignore_types(sysex=False, timing=False, active_sense=True)
        if poll_interval_s is None:
            midi_in.set_callback(self._callback)
        else:
            self._thread = threading.Thread(target=self._poll, name=f"midi-in {name}", daemon=True)
            self._thread.start()

    def _callback(self, event: tuple[list[int], float], _data: object = None) -> None:
        self._deliver(event[0])

    def after_input_before(self, cutoff_s: float, action: Callable[[], None]) -> None:
        if self._thread is None:
            action()
            return
        with self._waiters_lock:
            if not self._stop.is_set():
                self._waiters.append((cutoff_s, action))
                return
        action()  # closed: nothing more will be read

    def _poll(self) -> None:
        """Read rtmidi's queue. Under a flood it holds seconds of input, so a message is read
        long after it reached the port: the waiters of ``after_input_before`` run once the
        queue is found empty, or once a message read is known (from rtmidi's JACK time deltas)
        to have reached the port after their cutoff."""
        get, interval, stop = self._in.get_message, self.poll_interval_s, self._stop
        # A lower bound of when the message last read reached the port: the time the queue was
        # last found empty (what is read next came later), plus the time deltas rtmidi stamps
        # on each message in JACK's cycle (a message it ignores takes its delta with it, which
        # keeps the bound a lower one).
        reached_s = time.perf_counter()
        fresh = True  # nothing read since the queue was found empty
        while not stop.is_set():
            # A flood never leaves the queue empty: the stop flag is checked between batches
            # so closing the port (and stopping the bridge) never waits for the sender.
            for _ in range(_POLL_BATCH):
                event = get()
                if event is None:
                    break
                if fresh:  # its delta runs from a message read before the queue was empty
                    fresh = False
                else:
                    reached_s += event[1]
                if self._waiters:
                    self._run_waiters(reached_s)
                self._deliver(event[0])
            else:
                continue
            # Found empty: everything that reached the port until now has been delivered.
            reached_s = time.perf_counter()
            fresh = True
            if self._waiters:
                self._run_waiters(reached_s)
            time.sleep(interval)

    def _run_waiters(self, read_past_s: float) -> None:
        """Run the waiters whose cutoff the input has been read past (on the reading thread)."""
        with self._waiters_lock:
            due = [w for w in self._waiters if w[0] <= read_past_s]
            if not due:
                return
            self._waiters = [w for w in self._waiters if w[0] > read_past_s]
        for _, action in due:
            action()

    def _close(self) -> None:
        if self._thread is not None:
            with self._waiters_lock:
                self._stop.set()
            self._thread.join(timeout=1)
            self._run_waiters(float("inf"))  # nothing more will be read
        else:
            self._in.cancel_callback()
        self._in.close_port()
        self._in.delete()


class RtMidiBackend:
    """One rtmidi API. ``available()`` probes it without side effects on success."""

    def __init__(self, name: str, api: int, virtual_ports: bool = True,
                 poll_interval_s: float | None = None) -> None:
        self.name = name
        self.api = api
        self.virtual_ports = virtual_ports
        self.poll_interval_s = poll_interval_s

    def available(self) -> tuple[bool, str]:
        if self.api not in rtmidi.get_compiled_api():
            return False, f"python-rtmidi was built without {self.name} support"
        if self.name == "alsa" and not os.path.exists("/dev/snd/seq"):
            return False, "no ALSA sequencer (/dev/snd/seq missing; load snd-seq or use JACK)"
        if self.name == "jack" and not jack_running(attempts=JACK_PROBE_ATTEMPTS):
            # Asked first with jack_lsp so libjack's connection errors don't reach the terminal.
            return False, "no JACK server is running"
        if self.name == "coremidi" and sys.platform != "darwin":
            return False, "CoreMIDI exists only on macOS"
        if self.name == "winmm" and sys.platform != "win32":
            return False, "WinMM exists only on Windows"
        try:
            probe = rtmidi.MidiOut(self.api, "scorebridge-probe")
        except rtmidi.SystemError as exc:
            return False, f"{self.name}: {str(exc).splitlines()[0]}"
        probe.delete()
        return True, "ok"

    def _midi(self, kind: str, client: str) -> Any:
        try:
            if kind == "in":
                return rtmidi.MidiIn(self.api, client, queue_size_limit=RTMIDI_QUEUE_LIMIT)
            return rtmidi.MidiOut(self.api, client)
        except rtmidi.SystemError as exc:
            raise BackendError(f"{self.name} backend failed: {str(exc).splitlines()[0]}") from exc

    def _require_virtual(self) -> None:
        if not self.virtual_ports:
            raise PortError(
                f"{self.name} has no virtual ports: create a loopback port (e.g. loopMIDI on "
                "Windows) and connect to it with --connect-in/--connect-out"
            )

    def open_virtual_input(self, client: str, port: str, handler: InputHandler) -> RtMidiInput:
        self._require_virtual()
        midi_in = self._midi("in", client)
        midi_in.open_virtual_port(port)
        return RtMidiInput(f"{client}:{port}", midi_in, handler, self.poll_interval_s)

    def open_virtual_output(self, client: str, port: str) -> RtMidiOutput:
        self._require_virtual()
        midi_out = self._midi("out", client)
        midi_out.open_virtual_port(port)
        return RtMidiOutput(f"{client}:{port}", midi_out, paced=self.name == "jack")

    def list_inputs(self) -> list[str]:
        """Names of ports this backend can read from (other programs' outputs)."""
        probe = self._midi("in", "scorebridge-list")
        try:
            return list(probe.get_ports())
        finally:
            probe.delete()

    def list_outputs(self) -> list[str]:
        probe = self._midi("out", "scorebridge-list")
        try:
            return list(probe.get_ports())
        finally:
            probe.delete()

    def connect_input(self, client: str, target: str, handler: InputHandler) -> RtMidiInput:
        midi_in = self._midi("in", client)
        index = _index_of(midi_in.get_ports(), target)
        midi_in.open_port(index, "in")
        return RtMidiInput(target, midi_in, handler, self.poll_interval_s)

    def connect_output(self, client: str, target: str) -> RtMidiOutput:
        midi_out = self._midi("out", client)
        index = _index_of(midi_out.get_ports(), target)
        midi_out.open_port(index, "out")
        return RtMidiOutput(target, midi_out, paced=self.name == "jack")


def _index_of(ports: list[str], target: str) -> int:
    try:
        return ports.index(target)
    except ValueError:
        raise PortError(f"port {target!r} not found; present: {ports or 'none'}") from None
