"""Exported ONNX models and their model cards, shipped as package data.

Each model ``NAME.onnx`` has ``NAME.card.json`` beside it: one schema for every engine
(``onnx_file``, ``sha256``, ``inputs``, ``outputs``, ``parity`` and the engine's own sections:
data, splits, metrics, tokenizer...). ``open_model`` is the one loader every runtime uses (card,
sha256, graph inputs); ``check_parity`` reruns the example stored at export. Only numpy and
onnxruntime are needed; ``training/export.py`` writes the files.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError

__all__ = ["CARD_KEYS", "ONNX_KEY", "check_parity", "model_cards", "model_path", "models_dir", "open_model",
           "read_card", "sha256_of", "verify_card"]

ONNX_KEY = "onnx_file"  # the card's name for its model file
CARD_KEYS = (ONNX_KEY, "sha256", "inputs", "outputs", "parity")  # every card has these


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
    """The ONNX file a card describes (its ``onnx_file``, beside the card)."""
    name = card.get(ONNX_KEY)
    if not name:
        raise ModelLoadError(f"{card_path}: the card names no {ONNX_KEY}")
    return Path(card_path).parent / name


def verify_card(card_path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check that the card has the keys every card has (and ``required``), that its ONNX file
    exists and that the file's sha256 is the card's; returns the card."""
    card = read_card(card_path)
    missing = [key for key in (*CARD_KEYS, *required) if key not in card]
    if missing:
        raise ModelLoadError(f"{card_path}: missing keys {missing}; re-export the model")
    onnx_path = model_path(card_path, card)
    if not onnx_path.exists():
        raise ModelLoadError(f"{card_path}: model file {onnx_path.name} is missing")
    actual = sha256_of(onnx_path)
    if actual != card["sha256"]:
        raise ModelLoadError(f"{onnx_path.name}: sha256 {actual[:12]}... does not match the card's "
                             f"{str(card['sha256'])[:12]}...; the file changed after export: re-export "
                             "or restore it")
    return card


def open_model(
    onnx_path: str | Path,
    card_path: str | Path | None = None,
    *,
    threads: int = 1,
    required: tuple[str, ...] = (),
    export_hint: str = "re-export it",
) -> tuple[Any, dict[str, Any]]:
    """The one way a runtime opens a model: card read and checked (``verify_card``), the card's
    ``onnx_file`` must be this file, then an ONNX Runtime session on the CPU with ``threads``
    intra-op threads (one by default, so a live host keeps its other cores) whose graph inputs
    must be the card's. Returns (session, card); any problem is a ModelLoadError naming the fix."""
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    card_path = Path(card_path) if card_path else onnx_path.with_name(onnx_path.name.removesuffix(".onnx")
                                                                      + ".card.json")
    if not onnx_path.exists():
        raise ModelLoadError(f"{onnx_path} not found; {export_hint}")
    if not card_path.exists():
        raise ModelLoadError(f"{card_path} not found; every model needs its card (re-export)")
    card = read_card(card_path)
    if card.get(ONNX_KEY) != onnx_path.name:
        raise ModelLoadError(f"{card_path} describes {card.get(ONNX_KEY)!r}, not {onnx_path.name!r}")
    verify_card(card_path, required)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for a file it cannot read
        raise ModelLoadError(f"{onnx_path}: ONNX Runtime cannot load it: {error}") from error
    names = [node.name for node in session.get_inputs()]
    expected = [entry["name"] for entry in card["inputs"]]
    if names != expected:
        raise ModelLoadError(f"{onnx_path}: graph inputs {names} differ from the card's {expected}; "
                             "re-export it")
    return session, card


def check_parity(card_path: Path) -> float:
    """Run the model in ONNX Runtime on the card's stored example and compare with the
    outputs recorded at export (torch's). The example file holds one array per graph input
    and ``expected_<output>`` per output; returns the largest absolute difference."""
    import numpy as np

    card = read_card(card_path)
    session, card = open_model(model_path(card_path, card), card_path)
    parity = card["parity"]
    if "file" not in parity:
        raise ModelLoadError(f"{card_path}: the card stores no parity example")
    example_path = Path(card_path).parent / parity["file"]
    if not example_path.exists():
        raise ModelLoadError(f"{card_path}: parity example {example_path.name} is missing")
    if parity.get("sha256") and sha256_of(example_path) != parity["sha256"]:
        raise ModelLoadError(f"{example_path.name}: sha256 does not match the card")
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
