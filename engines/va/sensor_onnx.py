"""A user-supplied ONNX image encoder (plus optional linear probe) as the VA sensor.

Contract (docs/va.md):

- input: the model's first input, float32, ``[N, 3, H, W]`` (NCHW) or ``[N, H, W, 3]`` (NHWC:
  when the last dimension is 3 and the second is not), RGB scaled to [0, 1]. Any further
  normalisation (ImageNet mean/std...) belongs inside the graph. ``H`` and ``W`` come from the
  model's static shape; symbolic sizes default to 224. A symbolic ``N`` is fed batches of up to
  16 frames; a static ``N`` must be 1. Frames are stretched to ``W x H`` (no crop).
- output: the model's first output, float32 ``[N, 2]`` = (valence, arousal) in [-1, 1], or an
  embedding ``[N, D]`` together with a probe file: JSON ``{"weight": [[v, a] x D],
  "bias": [v, a], "activation": "linear" | "tanh"}`` or ``.npz`` with arrays ``weight`` [D, 2]
  and ``bias`` [2] (linear). VA = activation(embedding @ weight + bias), clipped to [-1, 1].
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .errors import VideoError

__all__ = ["OnnxSensor", "Probe", "load_probe"]

log = logging.getLogger(__name__)
DEFAULT_SIZE = 224
MAX_BATCH = 16


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exception classes (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented",
             "RuntimeException", "EPFail")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


class Probe:
    """A linear VA probe on an embedding."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, activation: str = "linear") -> None:
        if weight.ndim != 2 or weight.shape[1] != 2 or bias.shape != (2,):
            raise VideoError(f"probe: weight must be [D, 2] and bias [2], got {weight.shape} and {bias.shape}")
        if activation not in ("linear", "tanh"):
            raise VideoError(f"probe: activation must be 'linear' or 'tanh', got {activation!r}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise VideoError("probe: weight or bias holds NaN/infinite values")
        self.weight, self.bias, self.activation = weight, bias, activation

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        if embedding.shape[1] != self.weight.shape[0]:
            raise VideoError(f"probe expects {self.weight.shape[0]}-dim embeddings, the model gives "
                             f"{embedding.shape[1]}")
        out = embedding.astype(np.float64) @ self.weight + self.bias
        return np.tanh(out) if self.activation == "tanh" else out


def load_probe(path: str | os.PathLike[str]) -> Probe:
    """Read a probe from JSON or NPZ (see the module docstring)."""
    source = Path(path)
    try:
        if source.suffix.lower() == ".npz":
            with np.load(source, allow_pickle=False) as data:
                return Probe(np.asarray(data["weight"], np.float64), np.asarray(data["bias"], np.float64))
        data = json.loads(source.read_text(encoding="utf-8"))
        return Probe(np.asarray(data["weight"], np.float64), np.asarray(data["bias"], np.float64),
                     str(data.get("activation", "linear")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VideoError(f"probe {source}: cannot read a weight [D, 2] and bias [2] ({exc!r})") from None


class OnnxSensor:
    """Runs the encoder on frames and returns per-frame (valence, arousal)."""

    def __init__(self, model_path: str | os.PathLike[str], probe: Probe | None = None,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise VideoError(f"sensor model {self.path}: no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except _ort_errors() as exc:
            raise VideoError(f"sensor model {self.path}: ONNX Runtime cannot load it ({exc})") from None
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        if spec.type != "tensor(float)" or len(spec.shape) != 4:
            raise VideoError(f"sensor model {self.path}: input {spec.name!r} is {spec.type} {spec.shape}; "
                             "expected float32 [N, 3, H, W] or [N, H, W, 3]")
        shape = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        self.channels_last = shape[3] == 3 and shape[1] != 3
        if not self.channels_last and shape[1] not in (3, None):
            raise VideoError(f"sensor model {self.path}: input has {shape[1]} channels; expected 3 (RGB)")
        height, width = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        self.size = (width or DEFAULT_SIZE, height or DEFAULT_SIZE)
        self.batch = MAX_BATCH if shape[0] is None else shape[0]
        if self.batch != 1 and shape[0] is not None:
            raise VideoError(f"sensor model {self.path}: a static batch must be 1, got {shape[0]}")
        self.probe = probe
        self.clipped = 0
        self.frames = 0

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        """[len(frames), 2] (valence, arousal) for RGB uint8 frames of ``self.size``."""
        results = []
        for start in range(0, len(frames), self.batch):
            chunk = np.stack(frames[start : start + self.batch]).astype(np.float32) * (1.0 / 255.0)
            if not self.channels_last:
                chunk = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))
            try:
                output = np.asarray(self.session.run(None, {self.input_name: chunk})[0])
            except _ort_errors() as exc:
                raise VideoError(f"sensor model {self.path}: inference failed ({exc})") from None
            results.append(self._to_va(output, len(chunk)))
        values = np.concatenate(results)
        self.frames += len(values)
        self.clipped += int((np.abs(values) > 1.0).any(axis=1).sum())
        return np.clip(values, -1.0, 1.0)

    def _to_va(self, output: np.ndarray, count: int) -> np.ndarray:
        if output.ndim != 2 or output.shape[0] != count:
            raise VideoError(f"sensor model {self.path}: output shape {list(output.shape)}; expected "
                             f"[{count}, 2] (valence, arousal) or [{count}, D] with a probe")
        if not np.isfinite(output).all():
            raise VideoError(f"sensor model {self.path}: output holds NaN/infinite values")
        if self.probe is not None:
            return self.probe(output)
        if output.shape[1] != 2:
            raise VideoError(f"sensor model {self.path}: outputs {output.shape[1]}-dim embeddings; give a "
                             "probe file (--probe) mapping them to valence and arousal")
        return output.astype(np.float64)
