"""An output port that plays the bridge's 12-key stream in a tuning (MTS, MPE or nearest key).

It wraps the real port: every message the bridge sends passes through one ``core.retune.Retuner``
under the port's lock, so a tuning change can never fall between a note-on and the note-off that
ends it, and note-offs (the note tracker's releases included) always reach the channel and key
their note-on went to.
"""

from __future__ import annotations

import mido

from bridge.ports.base import OutputPort
from core.retune import Retuner
from core.tuning import Tuning

__all__ = ["RetunedPort"]


class RetunedPort(OutputPort):
    def __init__(self, inner: OutputPort, tuning: Tuning, mode: str) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.retuner = Retuner(tuning, mode)
        self._write(self.retuner.start())

    @property
    def tuning(self) -> Tuning:
        return self.retuner.tuning

    def announce(self) -> None:
        """Send the setup again (the tuning table, or the MPE zone): for a synth connected since."""
        with self._lock:
            if not self.closed:
                self._write(self.retuner.start())

    def set_tuning(self, tuning: Tuning) -> None:
        """Retune from now on: MTS resends the table (sounding notes follow on synths that apply
        real-time changes), MPE re-bends the sounding notes."""
        with self._lock:
            if not self.closed:
                self._write(self.retuner.set_tuning(tuning))

    def _write(self, messages: list[mido.Message]) -> None:
        for message in messages:
            self.inner.send_bytes(message.bytes())

    def _send(self, data: list[int]) -> None:
        # The bytes were checked where the message was built (send/emit); parsing cannot fail.
        self._write(self.retuner.convert(mido.Message.from_bytes(data)))

    def _close(self) -> None:
        if not self.inner.closed:
            self._write(self.retuner.release_all())
        self.inner.close()
