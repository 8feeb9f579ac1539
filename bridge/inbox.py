"""Bounded queues with a musical drop policy, between the MIDI input, the router and the
engine slots.

A queue fills only when its consumer falls behind (an engine slower than the input, a
flood). Then what can be lost without harm goes first, and every loss is counted:

- a controller value (or pitch bend, aftertouch, a parameter set, a beat) replaces the
  value still waiting for the same controller: only the latest one matters;
- when the queue is full, the oldest waiting controller-like item is evicted to make room
  for a note or a newer controller value; anything else (SysEx, clock ticks, stray
  note-offs) is dropped;
- a note-on is dropped only when nothing else can go, and then its note-off is dropped too
  (no hanging note); a note-off whose note-on was queued is always queued, even past the
  capacity (at most one per channel and pitch, so the overshoot is bounded);
- parameter sets, engine swaps, beats and transport changes are never dropped: a newer one
  replaces the one waiting (so there is at most one of each); internal work is always queued.

Switch controllers (sustain and the other pedals, channel mode messages), program changes
and transport messages keep their order with the notes: they coalesce only with a value
queued after the last note.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Policy", "BoundedInbox", "CLOSED", "Classifier"]


class Policy(enum.Enum):
    KEEP = "keep"  # always queued
    KEEP_LATEST = "keep_latest"  # always queued, and replaces a waiting item of the same key
    LATEST = "latest"  # coalesces with a waiting item of the same key, at any position
    LATEST_IN_ORDER = "latest_in_order"  # coalesces only if no note was queued since
    NOTE_ON = "note_on"
    NOTE_OFF = "note_off"
    DROPPABLE = "droppable"  # queued when there is room, else dropped


# classify(item) -> (policy, key, kind): kind names the counters ("note_on", "cc", ...).
Classifier = Callable[[Any], tuple[Policy, Hashable, str]]

CLOSED = object()  # what ``get`` returns once the inbox is closed
_GONE = object()  # a cell whose item was evicted


class _Cell:
    __slots__ = ("item", "key", "kind", "generation", "evictable")

    def __init__(self, item: Any, key: Hashable, kind: str, generation: int, evictable: bool) -> None:
        self.item, self.key, self.kind = item, key, kind
        self.generation, self.evictable = generation, evictable


class BoundedInbox:
    """A multi-producer, single-consumer queue of at most ``capacity`` droppable items."""

    def __init__(self, capacity: int, classify: Classifier) -> None:
        if capacity < 1:
            raise ValueError(f"inbox capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._classify = classify
        self._cells: deque[_Cell] = deque()
        self._evictable: deque[_Cell] = deque()  # oldest first; consumed cells are skipped
        self._latest: dict[Hashable, _Cell] = {}
        self._passed: set[Hashable] = set()  # note-ons queued whose note-off is not yet queued
        self._suppressed: set[Hashable] = set()  # note-ons dropped: their note-off goes too
        self._generation = 0  # bumped by every queued note: LATEST_IN_ORDER keeps order with it
        self._live = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.dropped: Counter[str] = Counter()
        self.coalesced: Counter[str] = Counter()
        self.high_water = 0
        self.accepted = 0

    # -- producers ---------------------------------------------------------------------
    def put(self, item: Any) -> bool:
        """Queue ``item`` unless the policy drops it; never blocks. True when it was queued
        (or merged into a waiting item)."""
        policy, key, kind = self._classify(item)
        with self._cond:
            if self._closed:
                return False
            if policy is Policy.KEEP:
                return self._append(item, key, kind, evictable=False)
            if policy is Policy.KEEP_LATEST:
                cell = self._latest.get(key)
                if cell is not None:
                    cell.item = item
                    self.coalesced[kind] += 1
                    return True
                queued = self._append(item, key, kind, evictable=False)
                self._latest[key] = self._cells[-1]
                return queued
            if policy is Policy.NOTE_OFF:
                return self._note_off(item, key, kind)
            if policy is Policy.NOTE_ON:
                return self._note_on(item, key, kind)
            if policy is not Policy.DROPPABLE:
                cell = self._latest.get(key)
                if cell is not None and (policy is Policy.LATEST or cell.generation == self._generation):
                    cell.item = item
                    self.coalesced[kind] += 1
                    return True
            if self._live >= self.capacity and (policy is Policy.DROPPABLE or not self._evict()):
                self.dropped[kind] += 1
                return False
            queued = self._append(item, key, kind, evictable=True)
            if policy is not Policy.DROPPABLE:
                self._latest[key] = self._cells[-1]
            return queued

    def _note_on(self, item: Any, key: Hashable, kind: str) -> bool:
        if self._live >= self.capacity and not self._evict():
            self.dropped[kind] += 1
            if key not in self._passed:
                self._suppressed.add(key)
            return False
        self._suppressed.discard(key)
        self._passed.add(key)
        self._generation += 1
        return self._append(item, key, kind, evictable=False)

    def _note_off(self, item: Any, key: Hashable, kind: str) -> bool:
        if key in self._passed:
            self._passed.discard(key)
            self._suppressed.discard(key)
        elif key in self._suppressed:
            self._suppressed.discard(key)
            self.dropped[kind] += 1
            return False
        elif self._live >= self.capacity:
            # A note-off for no note-on seen here (pressed before the bridge started, or
            # sent twice): nothing hangs without it.
            self.dropped[kind] += 1
            return False
        self._generation += 1
        return self._append(item, key, kind, evictable=False)

    def _append(self, item: Any, key: Hashable, kind: str, evictable: bool) -> bool:
        cell = _Cell(item, key, kind, self._generation, evictable)
        self._cells.append(cell)
        if evictable:
            self._evictable.append(cell)
        self._live += 1
        self.accepted += 1
        if self._live > self.high_water:
            self.high_water = self._live
        self._cond.notify()
        return True

    def _evict(self) -> bool:
        """Drop the oldest waiting controller-like item; False when there is none."""
        while self._evictable:
            cell = self._evictable.popleft()
            if cell.item is _GONE:
                continue  # already consumed
            self._forget(cell)
            cell.item = _GONE
            self._live -= 1
            self.dropped[cell.kind] += 1
            return True
        return False

    def _forget(self, cell: _Cell) -> None:
        if self._latest.get(cell.key) is cell:
            del self._latest[cell.key]

    # -- the consumer ------------------------------------------------------------------
    def get(self, timeout_s: float | None = None) -> Any:
        """The oldest item; ``CLOSED`` once closed. Raises TimeoutError after ``timeout_s``."""
        with self._cond:
            while True:
                if self._closed:
                    return CLOSED
                while self._cells:
                    cell = self._cells.popleft()
                    item = cell.item
                    if item is _GONE:
                        continue
                    self._forget(cell)
                    if cell.evictable:
                        # Consumed in order: every evictable cell before it is gone already.
                        if self._evictable and self._evictable[0] is cell:
                            self._evictable.popleft()
                        cell.item = _GONE
                    self._live -= 1
                    return item
                if not self._cond.wait(timeout_s):
                    raise TimeoutError

    def close(self) -> None:
        """Wake the consumer with ``CLOSED`` now; what was waiting is discarded."""
        with self._cond:
            self._closed = True
            self._cells.clear()
            self._evictable.clear()
            self._latest.clear()
            self._live = 0
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return self._live

    def status(self) -> dict[str, Any]:
        """Counters for ``scorebridge status``."""
        with self._cond:
            return {"queued": self._live, "capacity": self.capacity, "high_water": self.high_water,
                    "accepted": self.accepted, "dropped": dict(self.dropped),
                    "dropped_total": sum(self.dropped.values()),
                    "coalesced": dict(self.coalesced), "coalesced_total": sum(self.coalesced.values())}
