"""``scorebridge doctor``: what works on this machine, and what to do about what does not."""

from __future__ import annotations

import argparse
import json
import shutil
import socket

from bridge.jack import jack_running
from bridge.osc import PREFIX
from bridge.ports import BACKENDS
from cli.arguments import add_osc_target
from core.errors import ScoreBridgeError

__all__ = ["doctor", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    doctor_parser = sub.add_parser("doctor", help="check MIDI backends, JACK, the OSC port and models")
    add_osc_target(doctor_parser, any_port=True)
    doctor_parser.set_defaults(run=doctor)


def _check(ok: bool, label: str, detail: str, problems: list[str], required: bool = True) -> None:
    mark = "ok  " if ok else ("FAIL" if required else "note")
    print(f"[{mark}] {label}: {detail}")
    if not ok and required:
        problems.append(label)


def doctor(args: argparse.Namespace) -> int:
    problems: list[str] = []
    usable = []
    for name, backend in BACKENDS.items():
        ok, why = backend.available()
        if ok:
            usable.append(name)
        _check(ok, f"MIDI backend {name}", "usable" if ok else why, problems, required=False)
    jackd = shutil.which("jackd")
    running = jack_running()
    _check(bool(jackd) or bool(usable), "jackd", jackd or "not installed (apt-get install jackd2)",
           problems, required=not usable)
    _check(True, "JACK server", "running" if running else "not running (serve starts a private one)",
           problems, required=False)
    if not usable and not jackd:
        problems.append("no MIDI backend")
        print("       no MIDI backend works and jackd is missing: install jackd2 or load snd-seq")
    _check_osc(args.osc_host, args.osc_port, problems)
    _check_models(problems)
    if problems:
        print(f"doctor: {len(problems)} problem(s): {', '.join(problems)}")
        return 1
    print("doctor: everything needed to serve works")
    return 0


def _check_osc(host: str, port: int, problems: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            from bridge.remote import request

            try:
                reply = request(host, port, f"{PREFIX}/status", f"{PREFIX}/status", timeout_s=1.0)
                running = json.loads(reply[0])
                _check(True, "OSC port",
                       f"{host}:{port} is used by a running bridge ({running.get('state')})", problems)
                _report_bridge(running, problems)
            except ScoreBridgeError:
                _check(False, "OSC port", f"{host}:{port} is taken by another program ({exc.strerror}); "
                       "use --osc-port", problems)
            return
    _check(True, "OSC port", f"{host}:{port} is free", problems)


def _report_bridge(status: dict, problems: list[str]) -> None:
    """Counters of the running bridge: dropped input, failed engines, send errors."""
    midi_in = status.get("midi_in", {})
    dropped = {k: v for k, v in midi_in.items() if k not in ("accepted", "transport", "ignored")}
    print(f"       MIDI in: {midi_in.get('accepted', 0)} accepted; dropped {dropped or 'nothing'}")
    print(f"       OSC: {status.get('osc', {})}")
    for slot, info in status.get("engines", {}).items():
        ok = info.get("enabled", False)
        state = "running" if ok else f"disabled: {info.get('error')}"
        _check(ok, f"engine slot {slot}", f"{info.get('engine')} {state}", problems)
    errors = status.get("midi_out", {}).get("send_errors", 0)
    _check(errors == 0, "MIDI out", f"{errors} send errors", problems)


def _check_models(problems: list[str]) -> None:
    from onnx_models import model_cards

    cards = model_cards()
    if not cards:
        _check(True, "models", "no exported models shipped yet (the rule engine needs none)", problems,
               required=False)
        return
    from onnx_models import check_parity

    for card_path in cards:
        try:
            worst = check_parity(card_path)
            _check(True, f"model {card_path.name.removesuffix('.card.json')}",
                   f"hash matches, ONNX Runtime parity {worst:.1e}", problems)
        except ScoreBridgeError as exc:
            _check(False, f"model {card_path.name.removesuffix('.card.json')}", str(exc), problems)
