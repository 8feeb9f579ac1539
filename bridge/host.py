"""The engine host: one worker thread per engine slot, routing, parameters, swaps and
error isolation.

A slot is a named place in the bridge (``rule``, ``harmony``...) that holds one engine, an
input channel filter and an output port/channel. Input events reach a slot through its inbox;
the slot's worker runs the engine and hands outputs to the note tracker (now) or the
scheduler (later). A slow engine only delays its own slot, and its inbox is bounded
(``SLOT_INBOX_CAPACITY``, the drop policy of ``bridge.inbox``): an engine that falls behind
loses repeated controller values first, then new notes with their note-offs, never a note-off
whose note-on it heard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.clock import Transport
from bridge.inbox import CLOSED, BoundedInbox, Policy
from bridge.output import NoteTracker, Scheduler
from bridge.ports.base import OutputPort
from core.errors import EngineError, ScoreBridgeError
from core.events import Beat, ControlChange, EngineInput, Note, NoteOff, NoteOn, Send, Silence, TransportChange
from engines import Engine, EngineContext, engine_class

__all__ = ["Slot", "EngineHost", "SlotConfig", "SLOT_INBOX_CAPACITY", "STOP_GRACE_S", "STOP_TIMEOUT_S"]

log = logging.getLogger(__name__)

# Events waiting for one engine. A fast engine keeps it nearly empty; for a slow one (the
# learned harmonizer at a few ms per decision) this is a fraction of a second of input under
# a flood (1024 held up to 8 s in the soak): late notes are worse than dropped ones.
SLOT_INBOX_CAPACITY = 256
# How long stopping waits for all engine workers together (one may be inside a slow call).
STOP_TIMEOUT_S = 1.0
# How much longer it waits, with a warning, for a worker still inside a native call (an ONNX
# Runtime generation on a loaded machine): a process that exits while a thread is inside ONNX
# Runtime can die in the runtime's teardown (SIGSEGV/SIGABRT) instead of exiting cleanly.
STOP_GRACE_S = 15.0
# How long starting waits for the engines to prepare (load their models) before going online.
PREPARE_TIMEOUT_S = 30.0
# Input-to-output latencies kept per slot for the percentiles in ``status`` (sorted on every
# status request, so the cost of a status stays small under an OSC flood).
LATENCY_SAMPLES_KEPT = 20_000
# Switch controllers (pedals) and channel mode messages keep their order with the notes.
_ORDERED_CONTROLLERS = frozenset(range(64, 70)) | frozenset(range(120, 128))

# listener(slot, name, value, origin): origin says where a change came from (bridge.feedback)
ParamListener = Callable[[str, str, Any, Any], None]


@dataclass
class SlotConfig:
    name: str
    engine: str
    in_channels: frozenset[int] | None = None  # 0-based; None = all
    out_channel: int = 1  # 0-based
    out_port: str | None = None  # None = the main output
    params: dict[str, Any] | None = None


class _Swap:
    def __init__(self, engine: Engine, origin: Any = None) -> None:
        self.engine, self.origin = engine, origin


class _SetParam:
    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value


def classify_event(item: object) -> tuple[Policy, Hashable, str]:
    """The drop policy of a slot's inbox (``bridge.inbox``): swaps, parameter sets and
    (cut, event) pairs."""
    if isinstance(item, tuple):
        item = item[1]
    if isinstance(item, NoteOn):
        return Policy.NOTE_ON, (item.channel, item.pitch), "note_on"
    if isinstance(item, NoteOff):
        return Policy.NOTE_OFF, (item.channel, item.pitch), "note_off"
    if isinstance(item, ControlChange):
        ordered = item.control in _ORDERED_CONTROLLERS
        return (Policy.LATEST_IN_ORDER if ordered else Policy.LATEST), (item.channel, item.control), "cc"
    if isinstance(item, _SetParam):
        return Policy.KEEP_LATEST, ("param", item.name), "param"
    if isinstance(item, _Swap):
        return Policy.KEEP_LATEST, ("swap",), "swap"
    # Beats and transport changes are never dropped: an engine keeps time (and forgets its
    # past) on them. One of each waits at most; a newer one takes its place.
    if isinstance(item, Beat):
        return Policy.KEEP_LATEST, ("beat",), "beat"
    if isinstance(item, TransportChange):
        return Policy.KEEP_LATEST, ("transport",), "transport"
    return Policy.KEEP, None, "other"


class Slot:
    """One engine, its inbox and its worker thread.

    No note-on may follow a release. Two counters make that so, both changed only with the
    note tracker's lock held, where the worker also checks them and sends:

    - ``epoch`` changes at every release of the slot's notes; timed output carries the epoch it
      was computed in and is dropped when it comes due in a later one (a job may already be
      running when its cancel comes);
    - ``cuts`` changes at a release from outside the worker (transport stop or locate, panic,
      muting); input is queued with the value it had then, and what the engine computes from
      input queued before a cut is dropped, however late the worker gets to it.
    """

    def __init__(self, config: SlotConfig, engine: Engine, port: OutputPort, host: EngineHost) -> None:
        self.name = config.name
        self.config = config
        self.engine = engine
        self.port = port
        self.host = host
        self.inbox = BoundedInbox(SLOT_INBOX_CAPACITY, classify_event)
        self.enabled = True
        self.error: str | None = None
        self.epoch = 0
        self.cuts = 0
        # Transport stops and locates published, and how many of them the engine was reset
        # for: a transport change waiting in the inbox is replaced by a newer one, so the
        # worker resets before any transport change that follows an unanswered one.
        self.resets_due = 0
        self._resets_done = 0
        # The player's notes held on this slot's input: (channel, pitch) -> velocity.
        self.held: dict[tuple[int, int], int] = {}
        self.processed = 0
        self.outputs = 0
        self.dropped_stale = 0
        self.max_process_s = 0.0
        # Input callback -> output sent, for every note that produced immediate output.
        self.latencies_s: deque[float] = deque(maxlen=LATENCY_SAMPLES_KEPT)
        self.values: dict[str, Any] = engine.values()
        self.ready = threading.Event()  # set once the first engine's ``prepare`` has returned
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)

    def accepts(self, channel: int) -> bool:
        return self.config.in_channels is None or channel in self.config.in_channels

    def put(self, event: EngineInput) -> None:
        """Queue one input for the engine, stamped with the current cut."""
        self.inbox.put((self.cuts, event))

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the worker now: input still waiting is discarded (its notes are released)."""
        self.inbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _prepare(self, engine: Engine) -> bool:
        """``engine.prepare`` on this worker; a failure disables the slot (shown in status)."""
        try:
            engine.prepare(EngineContext(self.name, self.config.out_channel, self.host.transport.tempo_bpm))
        except Exception as exc:  # noqa: BLE001 - a model that cannot load fails its slot only
            self._fail(exc, "could not be prepared")
            return False
        return True

    def _release_engine(self, engine: Engine) -> None:
        try:
            engine.release()
        except Exception as exc:  # engine code: the slot goes on without it
            log.error("engine %r in slot %r failed to release: %s", engine.name, self.name, exc,
                      exc_info=exc)

    def _run(self) -> None:
        try:
            self._prepare(self.engine)
        finally:
            self.ready.set()
        while True:
            item = self.inbox.get()
            if item is CLOSED:
                break
            if isinstance(item, _Swap):
                self._swap(item.engine, item.origin)
            elif isinstance(item, _SetParam):
                self._set_param(item.name, item.value)
            elif self.enabled:
                stamp, event = item
                self._process(event, stamp)
        self._release_engine(self.engine)

    def _process(self, event: EngineInput, stamp: int) -> None:
        if isinstance(event, NoteOn):
            self.held[(event.channel, event.pitch)] = event.velocity
        elif isinstance(event, NoteOff):
            self.held.pop((event.channel, event.pitch), None)
        started = time.perf_counter()
        try:
            if isinstance(event, TransportChange) and self._resets_done != self.resets_due:
                self._resets_done = self.resets_due
                self.engine.reset()
            outputs = self.engine.process(event)
        except Exception as exc:  # noqa: BLE001 - the isolation boundary: any engine bug
            self._fail(exc)
            return
        self.processed += 1
        self.max_process_s = max(self.max_process_s, time.perf_counter() - started)
        with self.host.tracker.lock:
            if stamp != self.cuts:
                self.dropped_stale += len(outputs)
                return
            for output in outputs:
                self._dispatch(output)  # a Silence releases what sounds: what follows it is sent
        if outputs and isinstance(event, (NoteOn, NoteOff)) and outputs[0].at_beats is None:
            self.latencies_s.append(time.perf_counter() - event.time_s)
        for listener in self.host.output_listeners if outputs else ():
            listener(self.name, outputs)

    def _dispatch(self, output: Note | Send | Silence) -> None:
        """Send or schedule one output (with the tracker's lock held)."""
        channel = self.config.out_channel
        tracker, scheduler, transport = self.host.tracker, self.host.scheduler, self.host.transport
        self.outputs += 1
        if isinstance(output, Silence):
            self.silence(drop_queued=False)
            return
        epoch = self.epoch
        if isinstance(output, Send):
            data = output.message.bytes()
            if data[0] < 0xF0:  # channel messages go out on the slot's channel (or the Send's)
                data[0] = (data[0] & 0xF0) | (channel if output.channel is None else output.channel)
            if output.at_beats is None:
                tracker.emit_bytes(self.port, data, self.name)
            else:
                scheduler.at(transport.time_at(output.at_beats), lambda: self._emit_in(epoch, data), self.name)
            return
        ch = channel if output.channel is None else output.channel
        on, off = [0x90 | ch, output.pitch, output.velocity], [0x80 | ch, output.pitch, 0]
        start_s = time.perf_counter() if output.at_beats is None else transport.time_at(output.at_beats)
        end_s = start_s + output.duration_beats * transport.seconds_per_beat()
        if output.at_beats is None:
            tracker.emit_bytes(self.port, on, self.name)
        else:
            scheduler.at(start_s, lambda: self._emit_in(epoch, on), self.name)
        scheduler.at(end_s, lambda: self._emit_in(epoch, off), self.name)

    def _emit_in(self, epoch: int, data: list[int]) -> None:
        """Timed output (on the scheduler): sent only if no release came since it was computed."""
        tracker = self.host.tracker
        with tracker.lock:
            if epoch == self.epoch:
                tracker.emit_bytes(self.port, data, self.name)

    def _fail(self, exc: BaseException, what: str = "raised") -> None:
        self.enabled = False
        self.error = f"{type(exc).__name__}: {exc}"
        self.host.engine_errors += 1
        log.error("engine %r in slot %r %s and was disabled: %s", self.engine.name, self.name, what,
                  self.error, exc_info=exc)
        self.silence(drop_queued=False)

    def silence(self, drop_queued: bool = True) -> int:
        """Cancel this slot's pending output and release every note it sounds. With
        ``drop_queued`` (a release from outside the worker), what the engine computes from
        input queued until now is dropped too."""
        with self.host.tracker.lock:
            self.epoch += 1
            if drop_queued:
                self.cuts += 1
            self.host.scheduler.cancel_owner(self.name)
            return self.host.tracker.release(owner=self.name)

    def _swap(self, engine: Engine, origin: Any = None) -> None:
        self.silence(drop_queued=False)
        old = self.engine
        self._release_engine(old)
        self.engine = engine
        self.values = engine.values()
        self.enabled, self.error = True, None
        log.info("slot %r: engine %r replaced by %r", self.name, old.name, engine.name)
        if self._prepare(engine):
            # The player may be holding notes: the new engine hears them as if just played.
            now = time.perf_counter()
            beats = self.host.transport.beats_at(now)
            playing = self.host.transport.playing
            for (channel, pitch), velocity in list(self.held.items()):
                self._process(NoteOn(pitch, velocity, channel, now, beats, playing), self.cuts)
        self.host.notify_param(self.name, "engine", engine.name, origin)
        for name, value in self.values.items():  # every surface shows the new engine's values
            self.host.notify_param(self.name, name, value)

    def _set_param(self, name: str, value: Any) -> None:
        try:
            self.engine.set_param(name, value)
        except Exception as exc:  # noqa: BLE001 - an engine's on_param_change hook is engine code
            self._fail(exc)


def cuts_output(event: object) -> bool:
    """A transport stop or locate: the song position the engines followed is left behind."""
    return isinstance(event, TransportChange) and (not event.playing or event.reason == "locate")


def _percentiles(values_s: deque[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of input-to-output latency (empty when none yet)."""
    if not values_s:
        return {}
    ordered = sorted(values_s)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"count": len(ordered), "p50": round(pick(0.5), 4), "p99": round(pick(0.99), 4),
            "max": round(ordered[-1] * 1000, 4)}


class EngineHost:
    """Owns the slots, fans input out to them and applies control from any source."""

    def __init__(self, transport: Transport, tracker: NoteTracker, scheduler: Scheduler) -> None:
        self.transport = transport
        self.tracker = tracker
        self.scheduler = scheduler
        self.slots: dict[str, Slot] = {}
        self.engine_errors = 0
        self._listeners: list[ParamListener] = []
        # listener(slot, outputs): what a slot's engine handed out, after it was sent or
        # scheduled (the browser's live view shows the timed notes as the engine's plan)
        self.output_listeners: list[Callable[[str, Sequence[Note | Send | Silence]], None]] = []

    def add_slot(self, config: SlotConfig, port: OutputPort) -> Slot:
        if config.name in self.slots:
            raise EngineError(f"two engine slots are called {config.name!r}")
        engine = engine_class(config.engine)()
        for name, value in (config.params or {}).items():
            engine.set_param(name, value)
        slot = Slot(config, engine, port, self)
        self.slots[config.name] = slot
        return slot

    def start(self, prepare_timeout_s: float = PREPARE_TIMEOUT_S) -> None:
        """Start every worker; each prepares its engine (loads its model) on its own thread.
        Returns once all are ready, or after ``prepare_timeout_s`` (a slow one then takes its
        input when it is ready)."""
        for slot in self.slots.values():
            slot.start()
        deadline = time.monotonic() + prepare_timeout_s
        for slot in self.slots.values():
            if not slot.ready.wait(max(0.0, deadline - time.monotonic())):
                log.warning("slot %r is still preparing its engine", slot.name)

    def stop(self) -> None:
        for slot in self.slots.values():
            slot.silence()
            slot.inbox.close()  # every worker is told first, then all are waited for together
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for slot in self.slots.values():
            slot.stop(max(0.0, deadline - time.monotonic()))
        busy = self.busy_slots()
        if busy:
            log.warning("waiting up to %.0f s for slot(s) %s to finish the engine call in progress",
                        STOP_GRACE_S, ", ".join(busy))
            deadline = time.monotonic() + STOP_GRACE_S
            for name in busy:
                self.slots[name].stop(max(0.0, deadline - time.monotonic()))

    def busy_slots(self) -> list[str]:
        """Slots whose worker is still running (inside an engine call) after ``stop``."""
        return [name for name, slot in self.slots.items() if slot.running]

    def dispatch(self, event: EngineInput, channel: int | None = None) -> None:
        """Fan one event out to the slots that listen on ``channel`` (None = all slots)."""
        if cuts_output(event):
            # Released here, on the router thread, so a busy engine cannot delay it.
            for slot in self.slots.values():
                slot.resets_due += 1
                slot.silence()
        for slot in self.slots.values():
            if channel is None or slot.accepts(channel):
                slot.put(event)

    def slot(self, name: str) -> Slot:
        if name not in self.slots:
            raise EngineError(f"no engine slot {name!r}; slots: {', '.join(self.slots) or 'none'}")
        return self.slots[name]

    def set_param(self, slot_name: str, name: str, value: Any, origin: Any = None) -> Any:
        """Validate now (raises ParameterError), apply on the slot's worker, echo to listeners."""
        slot = self.slot(slot_name)
        coerced = type(slot.engine).declaration(name).coerce(value)
        slot.values[name] = coerced
        slot.inbox.put(_SetParam(name, coerced))
        self.notify_param(slot_name, name, coerced, origin)
        return coerced

    def swap(self, slot_name: str, engine_name: str, origin: Any = None) -> None:
        slot = self.slot(slot_name)
        engine = engine_class(engine_name)()
        slot.inbox.put(_Swap(engine, origin))

    def set_enabled(self, slot_name: str, enabled: bool, origin: Any = None) -> None:
        """Re-enable a slot (e.g. after its engine raised) or mute it, releasing its notes."""
        slot = self.slot(slot_name)
        if not enabled:
            slot.enabled = False
            slot.silence()
        else:
            slot.enabled, slot.error = True, None
        self.notify_param(slot_name, "enabled", int(enabled), origin)

    def panic(self) -> int:
        """Cancel all pending output and release every tracked note."""
        with self.tracker.lock:
            for slot in self.slots.values():
                slot.epoch += 1
                slot.cuts += 1
                self.scheduler.cancel_owner(slot.name)
            return self.tracker.release()

    def add_listener(self, listener: ParamListener) -> None:
        self._listeners.append(listener)

    def notify_param(self, slot_name: str, name: str, value: Any, origin: Any = None) -> None:
        for listener in self._listeners:
            listener(slot_name, name, value, origin)

    def current_values(self) -> Iterable[tuple[str, str, Any]]:
        for slot in self.slots.values():
            yield slot.name, "engine", slot.engine.name
            yield slot.name, "enabled", int(slot.enabled)
            for name, value in slot.values.items():
                yield slot.name, name, value

    def status(self) -> dict[str, Any]:
        return {
            name: {
                "engine": slot.engine.name,
                "latency_beats": slot.engine.latency_beats,
                "enabled": slot.enabled,
                "error": slot.error,
                "processed": slot.processed,
                "outputs": slot.outputs,
                "dropped_stale": slot.dropped_stale,
                "max_process_ms": round(slot.max_process_s * 1000, 3),
                "latency_ms": _percentiles(slot.latencies_s),
                "sounding": len(self.tracker.sounding(name)),
                "queued": slot.inbox.qsize(),
                "inbox": slot.inbox.status(),
                "values": dict(slot.values),
                "engine_status": _engine_status(slot.engine),
            }
            for name, slot in self.slots.items()
        }


def _engine_status(engine: Engine) -> dict[str, Any]:
    """What the engine reports of itself (a player's buffers, a model's name); never fatal."""
    try:
        return engine.status()
    except (ScoreBridgeError, OSError, RuntimeError, ValueError) as exc:
        return {"error": str(exc)}
