"""``scorebridge models list|verify``: the shipped models, their cards, hashes and parity."""

from __future__ import annotations

import argparse

from core.errors import ModelLoadError
from onnx_models import check_parity, model_cards, read_card

__all__ = ["models_command"]


def models_command(args: argparse.Namespace) -> int:
    cards = model_cards()
    if args.name:
        cards = [c for c in cards if c.name.removesuffix(".card.json") == args.name]
        if not cards:
            names = ", ".join(c.name.removesuffix(".card.json") for c in model_cards()) or "none"
            raise ModelLoadError(f"no model called {args.name!r}; shipped: {names}")
    if args.action == "list":
        for card_path in cards:
            card = read_card(card_path)
            training = card.get("training", {})
            print(f"{card_path.name.removesuffix('.card.json')}: {card.get('task', '')}; "
                  f"{card.get('model', {}).get('parameters', '?')} parameters; "
                  f"trained {training.get('curriculum', '')} to step {training.get('step', '?')}"
                  f"{'' if training.get('finished', True) else ' (unfinished)'}; sha256 {card.get('sha256', '')[:12]}")
        if not cards:
            print("no models shipped")
        return 0
    failures = 0
    for card_path in cards:
        name = card_path.name.removesuffix(".card.json")
        try:
            worst = check_parity(card_path)
        except ModelLoadError as exc:
            failures += 1
            print(f"[FAIL] {name}: {exc}")
            continue
        print(f"[ok  ] {name}: sha256 matches; ONNX Runtime vs exported reference max |diff| {worst:.2e}")
    return 1 if failures else 0
