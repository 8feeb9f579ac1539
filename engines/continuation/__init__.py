"""Smart-Embedding two-hand piano continuation (paper section 2).

Runtime modules (tokens, runtime, sample) import numpy and onnxruntime only; the model,
training and export need torch and building the corpus needs music21. Nothing heavy is
imported here.
"""

from .tokens import VOCAB_SIZE, NoteEvent, canonicalize, decode, encode, token_name

__all__ = ["VOCAB_SIZE", "NoteEvent", "canonicalize", "decode", "encode", "token_name"]
