"""Learned harmonizer: masked single-encoder chord model (paper section 1) with an affective
adapter and a style anchor, exported to ONNX and decoded with numpy + onnxruntime.

Runtime modules (vocab, grid, affect, decode, harmonize, metrics, runtime, evaluate, and the
bridge side: voicing, clip, looper, engine) import numpy, onnxruntime and mido only. Training
and export (model, train, export) need torch; building the dataset needs music21. Nothing heavy
is imported here.
"""

from .decode import STRATEGIES, DecodeResult, fill_masks
from .grid import GridConfig, time_signature_vector
from .harmonize import Harmonization, bar_starts_for, harmonize
from .runtime import HarmonizerModel, ModelLoadError
from .vocab import VOCAB_SIZE, nearest_token, token_id, token_name, token_pitch_classes

__all__ = [
    "STRATEGIES",
    "DecodeResult",
    "fill_masks",
    "GridConfig",
    "Harmonization",
    "bar_starts_for",
    "harmonize",
    "time_signature_vector",
    "HarmonizerModel",
    "ModelLoadError",
    "VOCAB_SIZE",
    "nearest_token",
    "token_id",
    "token_name",
    "token_pitch_classes",
]
