"""The OSC address table of a running session (documented in README.md)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from bridge.osc import PREFIX

if TYPE_CHECKING:
    from bridge.session import Session

__all__ = ["install_osc_routes", "OSC_ADDRESSES"]

OSC_ADDRESSES = {
    "/scorebridge/<slot>/<param> value": "set an engine parameter (echoed to subscribers)",
    "/scorebridge/<slot>/engine name": "swap the slot's engine while running (notes released)",
    "/scorebridge/<slot>/enabled 0|1": "mute / re-enable a slot (e.g. after its engine failed)",
    "/scorebridge/subscribe [host] port": "send feedback to host:port (host defaults to the sender)",
    "/scorebridge/unsubscribe [host] port": "stop feedback",
    "/scorebridge/dump": "send every current value to the subscribers",
    "/scorebridge/panic": "release every note, All Notes Off on all channels; replies /scorebridge/panic/done n",
    "/scorebridge/status [host port]": "reply /scorebridge/status <json> (to the sender or host:port)",
    "/scorebridge/transport/start": "start the internal transport",
    "/scorebridge/transport/stop": "stop the internal transport (notes released)",
    "/scorebridge/transport/tempo bpm": "set the internal tempo",
    "/scorebridge/transport/locate beats": "move the song position",
}


def _target(args: list[Any], sender: tuple[str, int]) -> tuple[str, int]:
    if len(args) >= 2:
        return str(args[0]), int(args[1])
    if len(args) == 1:
        return sender[0], int(args[0])
    return sender


def install_osc_routes(session: Session) -> None:
    osc, host, transport = session.osc, session.host, session.transport

    def subscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.subscribe(*_target(args, sender))

    def unsubscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.unsubscribe(*_target(args, sender))

    def dump(args: list[Any], sender: tuple[str, int]) -> None:
        for slot, name, value in host.current_values():
            osc.feedback(f"{PREFIX}/{slot}/{name}", value)
        osc.feedback(f"{PREFIX}/transport/playing", int(transport.playing))
        osc.feedback(f"{PREFIX}/transport/tempo", float(round(transport.tempo_bpm, 2)))

    def panic(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...]:
        released = session.panic()
        return (f"{PREFIX}/panic/done", released)

    def status(args: list[Any], sender: tuple[str, int]) -> None:
        text = json.dumps(session.status(), sort_keys=True, default=str)
        osc.send_to(_target(args, sender), f"{PREFIX}/status", text)

    def transport_route(action: str):
        def handle(args: list[Any], sender: tuple[str, int]) -> None:
            now = time.perf_counter()
            if action == "start":
                events = transport.set_playing(True, now)
            elif action == "stop":
                events = transport.set_playing(False, now)
            elif action == "tempo":
                transport.set_tempo(float(args[0]))
                events = []
                osc.feedback(f"{PREFIX}/transport/tempo", float(args[0]))
            else:
                events = transport.locate(float(args[0]), now)
            session.router.publish_transport(events)

        return handle

    def param(slot: str, name: str, args: list[Any]) -> None:
        if len(args) != 1:
            raise ValueError(f"{PREFIX}/{slot}/{name} takes exactly one value, got {len(args)}")
        if name == "engine":
            host.swap(slot, str(args[0]))
        elif name == "enabled":
            host.set_enabled(slot, bool(args[0]))
        else:
            host.set_param(slot, name, args[0])

    osc.routes.update({
        "/subscribe": subscribe,
        "/unsubscribe": unsubscribe,
        "/dump": dump,
        "/panic": panic,
        "/status": status,
        **{f"/transport/{a}": transport_route(a) for a in ("start", "stop", "tempo", "locate")},
    })
    osc.param_handler = param
