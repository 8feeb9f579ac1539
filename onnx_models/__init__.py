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

from core.errors import ModelLoadError

__all__ = ["models_dir", "model_cards", "read_card", "verify_card", "check_parity", "sha256_of", "model_path"]


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


def model_path(card_path: Path, card: dict[str, Any]) -> Path:
    """The ONNX file a card describes (key ``onnx_file``; ``model_file`` is accepted too)."""
    model_name = card.get("onnx_file") or card.get("model_file")
    if not model_name:
        raise ModelLoadError(f"{card_path}: the card names no onnx_file")
    return Path(card_path).parent / model_name


def verify_card(card_path: Path) -> dict[str, Any]:
    """Check that the card's model file exists and matches its sha256; returns the card."""
    card = read_card(card_path)
    model_path_ = model_path(card_path, card)
    if not model_path_.exists():
        raise ModelLoadError(f"{card_path}: model file {model_path_.name} is missing")
    expected = card.get("sha256")
    actual = sha256_of(model_path_)
    if expected != actual:
        raise ModelLoadError(f"{model_path_.name}: sha256 {actual[:12]}... does not match the card's "
                             f"{str(expected)[:12]}...; re-export or restore the file")
    return card


def check_parity(card_path: Path) -> float:
    """Run the model in ONNX Runtime on the card's stored example and compare with the
    outputs recorded at export (torch's). The example file holds one array per graph input
    and ``expected_<output>`` per output; returns the largest absolute difference."""
    import numpy as np
    import onnxruntime as ort

    card = verify_card(card_path)
    parity = card.get("parity")
    if not parity or "file" not in parity:
        raise ModelLoadError(f"{card_path}: the card stores no parity example")
    example_path = Path(card_path).parent / parity["file"]
    if not example_path.exists():
        raise ModelLoadError(f"{card_path}: parity example {example_path.name} is missing")
    if parity.get("sha256") and sha256_of(example_path) != parity["sha256"]:
        raise ModelLoadError(f"{example_path.name}: sha256 does not match the card")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path(card_path, card)), options, providers=["CPUExecutionProvider"])
    with np.load(example_path) as example:
        feed = {i.name: example[i.name] for i in session.get_inputs() if i.name in example}
        missing = [i.name for i in session.get_inputs() if i.name not in example]
        if missing:
            raise ModelLoadError(f"{example_path.name}: no example for inputs {missing}")
        names = [o.name for o in session.get_outputs() if f"expected_{o.name}" in example]
        if not names:
            raise ModelLoadError(f"{example_path.name}: no expected_<output> arrays")
        outputs = session.run(names, feed)
        worst = max(float(np.max(np.abs(out - example[f"expected_{n}"]))) for n, out in zip(names, outputs))
    atol = float(parity.get("atol", 1e-4))
    if worst > atol:
        raise ModelLoadError(f"{card_path.name}: ONNX Runtime differs from the exported reference by "
                             f"{worst:.3g} > {atol:g}")
    return worst
