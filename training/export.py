"""The export tail every model shares: trace to ONNX, check the graph, write the parity example
and the card, verify the files through the runtime's own loader, then publish them together.

Export is a self-test: nothing reaches the output folder unless ONNX Runtime, opened the way the
engines open it (``onnx_models.open_model``), reproduces torch on the stored example. Files are
written and checked in a staging folder and moved into place at the end, so a reader never sees
a half-written model or a card that does not match its file.
"""

from __future__ import annotations

import datetime
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from onnx_models import ONNX_KEY, check_parity, sha256_of

__all__ = ["OPSET", "PARITY_ATOL", "ExportFiles", "publish", "trace"]

OPSET = 17
PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class ExportFiles:
    """The three files of one exported model, first in a staging folder under ``out_dir``."""

    out_dir: Path
    name: str

    @classmethod
    def staged(cls, out_dir: Path, name: str) -> ExportFiles:
        files = cls(Path(out_dir), name)
        files.staging.mkdir(parents=True, exist_ok=True)
        return files

    @property
    def staging(self) -> Path:
        return self.out_dir / f".{self.name}.staging"

    @property
    def onnx(self) -> Path:
        return self.staging / f"{self.name}.onnx"

    @property
    def card(self) -> Path:
        return self.staging / f"{self.name}.card.json"

    @property
    def parity(self) -> Path:
        return self.staging / f"{self.name}.parity.npz"


def trace(
    module: torch.nn.Module,
    example: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """TorchScript export (plain ops, opset 17) and ONNX's own checker."""
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (plain ops, checked against torch after);
        # its own deprecation notices and tracer notes are not problems of the model
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            tuple(example),
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def publish(
    files: ExportFiles,
    task: str,
    body: dict[str, Any],
    parity_feed: dict[str, np.ndarray],
    parity_record: dict[str, float],
    verify: Callable[[Path], dict[str, float]],
) -> dict[str, Any]:
    """Write the parity example (graph inputs + ``expected_<output>``) and the card, check them
    with ``onnx_models.check_parity`` and the model's own ``verify(onnx_path)`` (differences
    against torch through its runtime), then move the three files into ``files.out_dir``.

    ``body`` holds the model's own card sections; ``parity_record`` the differences measured
    while exporting. Raises RuntimeError when any difference exceeds PARITY_ATOL.
    """
    np.savez_compressed(files.parity, **parity_feed)
    card: dict[str, Any] = {
        "name": files.name,
        "task": task,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        ONNX_KEY: files.onnx.name,
        "sha256": sha256_of(files.onnx),
        "opset": OPSET,
        **body,
        "parity": {"file": files.parity.name, "sha256": sha256_of(files.parity), "atol": PARITY_ATOL}
        | parity_record,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__},
    }
    files.card.write_text(json.dumps(card, indent=1) + "\n")
    measured = {"parity_file": check_parity(files.card)} | verify(files.onnx)
    worst = max([*parity_record.values(), *measured.values()])
    if worst > PARITY_ATOL:
        raise RuntimeError(f"{files.onnx}: ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_ATOL}): "
                           f"{parity_record | measured}")
    card["parity"] |= {f"max_abs_difference_{key}": value for key, value in measured.items()}
    files.card.write_text(json.dumps(card, indent=1) + "\n")
    for path in (files.onnx, files.parity, files.card):
        path.replace(files.out_dir / path.name)
    files.staging.rmdir()
    return card
