"""Learned harmonizer: masked single-encoder chord model (paper section 1) with an affective
adapter and a style anchor, exported to ONNX and decoded with numpy + onnxruntime.

Runtime modules (vocab, grid, affect, decode, metrics, runtime) import numpy and onnxruntime
only. Training and export (model, train, export, curriculum CLI) need torch; dataset building
needs music21. Nothing heavy is imported here.
"""

from .decode import STRATEGIES, DecodeResult, fill_masks
from .grid import GridConfig, time_signature_vector
from .runtime import HarmonizerModel, ModelLoadError
from .vocab import VOCAB_SIZE, nearest_token, token_id, token_name, token_pitch_classes

__all__ = [
    "STRATEGIES",
    "DecodeResult",
    "fill_masks",
    "GridConfig",
    "time_signature_vector",
    "HarmonizerModel",
    "ModelLoadError",
    "VOCAB_SIZE",
    "nearest_token",
    "token_id",
    "token_name",
    "token_pitch_classes",
]
