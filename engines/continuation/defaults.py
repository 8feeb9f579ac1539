"""The continuation's decoding defaults as a user runs them (`scorebridge continue`, the live
engine, `scorebridge eval continuation`); no imports, so the command line can read them cheaply.

Chosen on the validation prompts of the two-hand corpus (docs/continuation.md, "Decoding
defaults"); ``sample.SamplingConfig``'s own defaults stay 0, the model alone.
"""

USER_BIASES: dict[str, float] = {"key_bias": 4.0, "pattern_bias": 4.0, "motif_bias": 3.0, "density_bias": 4.0}
# A hand's notes struck at one step share one velocity (``state.shared_chord_velocity``): about a
# quarter fewer tokens, so model steps, for 8 bars (issue 17, speed; docs/continuation.md, "Speed work").
USER_CHORD_VELOCITY = True
