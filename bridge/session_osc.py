"""The OSC address table of a running session (documented in README.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge.osc import PREFIX

if TYPE_CHECKING:
    from bridge.session import Session

__all__ = ["install_osc_routes", "OSC_ADDRESSES", "describe", "current_values"]

OSC_ADDRESSES = {
    "/scorebridge/<slot>/<param> value": "set an engine parameter (echoed to subscribers)",
    "/scorebridge/<slot>/engine name": "swap the slot's engine while running (notes released)",
    "/scorebridge/<slot>/enabled 0|1": "mute / re-enable a slot (e.g. after its engine failed)",
    "/scorebridge/subscribe [host] port": "send feedback to host:port (host defaults to the sender)",
    "/scorebridge/unsubscribe [host] port": "stop feedback",
    "/scorebridge/dump": "send every current value to the subscribers",
    "/scorebridge/describe": "reply /scorebridge/describe <json>: slots, engines, parameter declarations",
    "/scorebridge/panic": "release every note, All Notes Off on all channels; replies /scorebridge/panic/done n",
    "/scorebridge/status [host port]": "reply /scorebridge/status <json> (to the sender or host:port)",
    "/scorebridge/transport/start": "start the internal transport",
    "/scorebridge/transport/stop": "stop the internal transport (notes released)",
    "/scorebridge/transport/playing 0|1": "start or stop the internal transport",
    "/scorebridge/transport/tempo bpm": "set the internal tempo",
    "/scorebridge/transport/locate beats": "move the song position",
    "/scorebridge/affect/valence v, /arousal v": "valence/arousal (-1..1), shown on every surface",
    "/scorebridge/affect/override 0|1": "send valence/arousal to every engine that declares them",
    "/scorebridge/learn slot/param": "MIDI learn: the next control moved is bound to slot/param and saved",
    "/scorebridge/learn/cancel": "disarm MIDI learn",
}


def _target(args: list[Any], sender: tuple[str, int]) -> tuple[Any, Any]:
    """``[host] port`` of a subscribe/status request (host defaults to the sender's)."""
    if len(args) > 2:
        raise ValueError(f"expected [host] port, got {len(args)} arguments")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1:
        return sender[0], args[0]
    return sender


def describe(session: Session) -> dict[str, Any]:
    """Slots, their engines' parameter declarations and the engines available: what a surface
    needs to draw its controls."""
    from engines import available_engines

    controls = session.controls
    surface = [
        {"address": str(b.number), "target": b.target, "label": b.label or b.target, "scale": b.scale}
        for m in controls.all_maps() for b in m.bindings
        if b.source == "osc" and str(b.number).startswith("/surface/")
    ]
    return {
        "engines": sorted(available_engines()),
        "slots": {
            name: {"engine": slot.engine.name, "params": [p.as_dict() for p in type(slot.engine).params]}
            for name, slot in session.host.slots.items()
        },
        "surface": surface,
        "learn_armed": controls.learner.armed or "",
    }


def current_values(session: Session) -> list[tuple[str, tuple[Any, ...]]]:
    """Every value a surface shows, as (address, args)."""
    values = [(f"{PREFIX}/{slot}/{name}", (value,)) for slot, name, value in session.host.current_values()]
    transport = session.transport
    values.append((f"{PREFIX}/transport/playing", (int(transport.playing),)))
    values.append((f"{PREFIX}/transport/tempo", (float(round(transport.tempo_bpm, 2)),)))
    for name, value in session.controls.affect.items():
        values.append((f"{PREFIX}/affect/{name}", (value if name != "override" else int(value),)))
    return values


def install_osc_routes(session: Session) -> None:
    osc, controls = session.osc, session.controls

    def origin(sender: tuple[str, int]) -> tuple[Any, ...]:
        return ("osc", *sender) if sender[0] != "web" else sender

    def subscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.subscribe(*_target(args, sender))

    def unsubscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.unsubscribe(*_target(args, sender))

    def dump(args: list[Any], sender: tuple[str, int]) -> None:
        for address, values in current_values(session):
            osc.feedback(address, *values)

    def panic(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...]:
        released = controls.apply("panic", None, origin(sender))  # every other surface hears it too
        return (f"{PREFIX}/panic/done", released)

    def status_text() -> str:
        report = session.status()
        if isinstance(report.get("web"), str):  # the browser's token never leaves in a status
            report["web"] = urlsplit(report["web"])._replace(query="", fragment="").geturl()
        return json.dumps(report, sort_keys=True, default=str)

    def status(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...] | None:
        if args:  # checked before the status is gathered: only allowed targets get it
            target = osc.check_target(*_target(args, sender))
            osc.send_to(target, f"{PREFIX}/status", status_text())
            return None
        return (f"{PREFIX}/status", status_text())

    def describe_route(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...]:
        return (f"{PREFIX}/describe", json.dumps(describe(session), sort_keys=True))

    def control_route(path: str, takes_value: bool):
        def handle(args: list[Any], sender: tuple[str, int]) -> None:
            if takes_value and len(args) != 1:
                raise ValueError(f"{PREFIX}/{path} takes exactly one value, got {len(args)}")
            controls.apply(path, args[0] if takes_value else None, origin(sender))

        return handle

    def learn(args: list[Any], sender: tuple[str, int]) -> None:
        if len(args) != 1:
            raise ValueError(f"{PREFIX}/learn takes one target, e.g. rule/velocity")
        controls.learner.arm(str(args[0]))

    def param(slot: str, name: str, args: list[Any], sender: tuple[str, int]) -> None:
        if len(args) != 1:
            raise ValueError(f"{PREFIX}/{slot}/{name} takes exactly one value, got {len(args)}")
        controls.apply(f"{slot}/{name}", args[0], origin(sender))

    osc.routes.update({
        "/subscribe": subscribe,
        "/unsubscribe": unsubscribe,
        "/dump": dump,
        "/describe": describe_route,
        "/panic": panic,
        "/status": status,
        "/learn": learn,
        "/learn/cancel": lambda args, sender: controls.learner.cancel(),
        **{f"/transport/{a}": control_route(f"transport/{a}", a not in ("start", "stop"))
           for a in ("start", "stop", "playing", "tempo", "locate")},
        **{f"/affect/{a}": control_route(f"affect/{a}", True) for a in ("valence", "arousal", "override")},
    })
    osc.param_handler = param
    osc.external_handler = lambda address, args, sender: controls.on_osc(address, args, origin(sender))
