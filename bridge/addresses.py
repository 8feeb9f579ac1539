"""The bridge's own OSC addresses, in one table (README.md documents them for users).

Every address is ``PREFIX/path``. The OSC routes, the feedback the control layer publishes, the
browser surface, control maps and MIDI learn all name their paths from here. A slot's values are
``<slot>/<param>``, ``<slot>/engine`` and ``<slot>/enabled``; addresses outside the prefix
belong to the user's own surfaces (bound through a control map).
"""

from __future__ import annotations

from core.engine import Param
from core.tuning import preset_names

__all__ = ["PREFIX", "actions", "address", "path_of"]

PREFIX = "/scorebridge"

# Requests the bridge answers (the browser sends the same ones).
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
DUMP = "dump"
DESCRIBE = "describe"  # also the reply, with the description as JSON
STATUS = "status"  # also the reply, with the status as JSON
LEARN = "learn"  # arms learn; also the feedback of the armed target ("" when none)
LEARN_CANCEL = "learn/cancel"
# Replies and feedback only the bridge sends.
ERROR = "error"
PANIC_DONE = "panic/done"
LEARN_DONE = "learn/done"
LEARN_ERROR = "learn/error"
# Actions and values that OSC, maps, learn and the browser drive (``actions`` declares them).
PANIC = "panic"
START = "transport/start"
STOP = "transport/stop"
PLAYING = "transport/playing"
TEMPO = "transport/tempo"
LOCATE = "transport/locate"  # OSC and the browser only: a map has no song position to send
VALENCE = "affect/valence"
AROUSAL = "affect/arousal"
OVERRIDE = "affect/override"  # 1: valence and arousal go to every engine that declares them
TUNING = "tuning"  # a preset of core/tunings, or off: the main output and every engine with a tuning
# A slot's own values beside its engine's parameters.
ENGINE = "engine"
ENABLED = "enabled"


def address(path: str) -> str:
    """``rule/velocity`` -> ``/scorebridge/rule/velocity``."""
    return f"{PREFIX}/{path}"


def path_of(full: str) -> str | None:
    """The path of one of the bridge's addresses, or None for an address outside the prefix."""
    return full[len(PREFIX) + 1:] if full.startswith(PREFIX + "/") else None


def actions() -> dict[str, Param | None]:
    """The bridge's actions and values that are not engine parameters, with their declarations
    (None = a trigger): what maps and learn validate against."""
    return {
        PANIC: None,
        START: None,
        STOP: None,
        PLAYING: Param("playing", "bool", False, doc="Internal transport running"),
        TEMPO: Param("tempo", "float", 120.0, 20.0, 400.0, unit="BPM"),
        VALENCE: Param("valence", "float", 0.0, -1.0, 1.0, doc="Valence override"),
        AROUSAL: Param("arousal", "float", 0.0, -1.0, 1.0, doc="Arousal override"),
        OVERRIDE: Param("override", "bool", False, doc="Send the valence/arousal override "
                                 "to every engine that declares valence/arousal parameters"),
        TUNING: Param("tuning", "choice", "off", choices=("off", *preset_names()),
                      doc="Scale and tuning of the output and of every engine that declares one"),
    }
