"""Smart-Embedding two-hand piano continuation (paper section 2).

Runtime modules (tokens, affect, runtime, sample, offline, live, engine, noise_probe) import
numpy, onnxruntime and mido only; model, train, export and compare need torch; building the
corpus needs music21. Nothing heavy is imported here.
"""

from .tokens import VOCAB_SIZE, NoteEvent, canonicalize, decode, encode, token_name

__all__ = ["VOCAB_SIZE", "NoteEvent", "canonicalize", "decode", "encode", "token_name"]
