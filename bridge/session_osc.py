"""The routes of the bridge's OSC addresses (``bridge.addresses``, documented in README.md), and
what a surface that connects is sent: the description of the slots and every current value."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge import addresses as A

if TYPE_CHECKING:
    from bridge.control import Controls
    from bridge.osc import OscServer

__all__ = ["current_values", "describe", "install_osc_routes", "surface_values"]


def _target(args: list[Any], sender: tuple[str, int]) -> tuple[Any, Any]:
    """``[host] port`` of a subscribe/status request (host defaults to the sender's)."""
    if len(args) > 2:
        raise ValueError(f"expected [host] port, got {len(args)} arguments")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1:
        return sender[0], args[0]
    return sender


def describe(controls: Controls) -> dict[str, Any]:
    """Slots, their engines' parameter declarations and the engines available: what a surface
    needs to draw its controls."""
    from engines import available_engines

    surface = [
        {"address": str(b.number), "target": b.target, "label": b.label or b.target, "scale": b.scale}
        for m in controls.all_maps() for b in m.bindings
        if b.source == "osc" and str(b.number).startswith("/surface/")
    ]
    return {
        "engines": sorted(available_engines()),
        "slots": {
            name: {"engine": slot.engine.name, "params": [p.as_dict() for p in type(slot.engine).params]}
            for name, slot in controls.host.slots.items()
        },
        "surface": surface,
        "learn_armed": controls.learner.armed or "",
    }


def current_values(controls: Controls) -> list[tuple[str, tuple[Any, ...]]]:
    """Every value a surface shows, as (address, args)."""
    values = [(A.address(f"{slot}/{name}"), (value,)) for slot, name, value in controls.host.current_values()]
    transport = controls.transport
    values.append((A.address(A.PLAYING), (int(transport.playing),)))
    values.append((A.address(A.TEMPO), (float(round(transport.tempo_bpm, 2)),)))
    values.append((A.address(A.TUNING), (controls.tuning,)))
    for name, value in controls.affect.items():
        values.append((A.address(f"affect/{name}"), (value if name != "override" else int(value),)))
    return values


def surface_values(controls: Controls) -> list[tuple[str, tuple[Any, ...]]]:
    """What a browser that just connected is sent: every value, then each map-bound address's."""
    return [*current_values(controls), *((address, (value,)) for address, value in controls.surface_values())]


def install_osc_routes(osc: OscServer, controls: Controls, status: Callable[[], dict[str, Any]]) -> None:
    """Answer the bridge's addresses on ``osc``: control goes to ``controls``, a status request
    gets ``status()``."""

    def origin(sender: tuple[str, int]) -> tuple[Any, ...]:
        return ("osc", *sender) if sender[0] != "web" else sender

    def subscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.subscribe(*_target(args, sender))

    def unsubscribe(args: list[Any], sender: tuple[str, int]) -> None:
        osc.unsubscribe(*_target(args, sender))

    def dump(args: list[Any], sender: tuple[str, int]) -> None:
        for address, values in current_values(controls):
            osc.feedback(address, *values)

    def panic(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...]:
        released = controls.apply(A.PANIC, None, origin(sender))  # every other surface hears it too
        return (A.address(A.PANIC_DONE), released)

    def status_text() -> str:
        report = status()
        if isinstance(report.get("web"), str):  # the browser's token never leaves in a status
            report["web"] = urlsplit(report["web"])._replace(query="", fragment="").geturl()
        return json.dumps(report, sort_keys=True, default=str)

    def status_route(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...] | None:
        if args:  # checked before the status is gathered: only allowed targets get it
            target = osc.check_target(*_target(args, sender))
            osc.send_to(target, A.address(A.STATUS), status_text())
            return None
        return (A.address(A.STATUS), status_text())

    def describe_route(args: list[Any], sender: tuple[str, int]) -> tuple[Any, ...]:
        return (A.address(A.DESCRIBE), json.dumps(describe(controls), sort_keys=True))

    def control_route(path: str, takes_value: bool):
        def handle(args: list[Any], sender: tuple[str, int]) -> None:
            if takes_value and len(args) != 1:
                raise ValueError(f"{A.address(path)} takes exactly one value, got {len(args)}")
            controls.apply(path, args[0] if takes_value else None, origin(sender))

        return handle

    def learn(args: list[Any], sender: tuple[str, int]) -> None:
        if len(args) != 1:
            raise ValueError(f"{A.address(A.LEARN)} takes one target, e.g. rule/velocity")
        controls.learner.arm(str(args[0]))

    def param(slot: str, name: str, args: list[Any], sender: tuple[str, int]) -> None:
        if len(args) != 1:
            raise ValueError(f"{A.address(f'{slot}/{name}')} takes exactly one value, got {len(args)}")
        controls.apply(f"{slot}/{name}", args[0], origin(sender))

    osc.routes.update({
        A.SUBSCRIBE: subscribe,
        A.UNSUBSCRIBE: unsubscribe,
        A.DUMP: dump,
        A.DESCRIBE: describe_route,
        A.PANIC: panic,
        A.STATUS: status_route,
        A.LEARN: learn,
        A.LEARN_CANCEL: lambda args, sender: controls.learner.cancel(),
        **{path: control_route(path, path not in (A.START, A.STOP))
           for path in (A.START, A.STOP, A.PLAYING, A.TEMPO, A.LOCATE, A.VALENCE, A.AROUSAL, A.OVERRIDE,
                        A.TUNING)},
    })
    osc.param_handler = param
    osc.external_handler = lambda address, args, sender: controls.on_osc(address, args, origin(sender))
