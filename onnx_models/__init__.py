"""Exported ONNX models and their model cards, shipped as package data.

Each model ``NAME.onnx`` has ``NAME.card.json`` beside it (data, splits, metrics, inputs and
outputs, sha256). Only numpy and onnxruntime are needed to load them.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from bridge.errors import ModelLoadError

__all__ = ["models_dir", "model_cards", "read_card", "verify_card", "sha256_of"]


def models_dir() -> Path:
    return Path(str(files(__name__)))


def model_cards() -> list[Path]:
    return sorted(models_dir().glob("*.card.json"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(card_path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(card_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model card {card_path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"model card {card_path} is not valid JSON: {exc}") from None


def verify_card(card_path: Path) -> dict[str, Any]:
    """Check that the card's model file exists and matches its sha256; returns the card."""
    card = read_card(card_path)
    model_name = card.get("model_file") or card.get("file")
    if not model_name:
        raise ModelLoadError(f"{card_path}: the card names no model_file")
    model_path = Path(card_path).parent / model_name
    if not model_path.exists():
        raise ModelLoadError(f"{card_path}: model file {model_path.name} is missing")
    expected = card.get("sha256")
    actual = sha256_of(model_path)
    if expected != actual:
        raise ModelLoadError(f"{model_path.name}: sha256 {actual[:12]}... does not match the card's "
                             f"{str(expected)[:12]}...; re-export or restore the file")
    return card
