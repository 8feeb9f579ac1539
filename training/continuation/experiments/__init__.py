"""Continuation experiments that were not shipped, kept runnable because docs/continuation.md
reports their results: the valence probe and adapter tuning, distilling the mode steering, and
valence guidance at inference."""
