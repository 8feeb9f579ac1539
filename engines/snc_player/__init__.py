"""Adaptive stem playback and rendering of SNC files (docs/snc_player.md).

``Pipeline`` is the DSP (mixer, listening context, valence-arousal gains, output stage),
``render`` runs it on pyo's offline server, ``Player`` streams it live through pyo (JACK or
PortAudio), ``SncEngine`` puts a player in a ``scorebridge serve`` slot. pyo is imported only
when audio is produced.
"""

from engines.snc_player.contexts import BUILTIN, Context, load_contexts
from engines.snc_player.mixer import Mixer, StemMix
from engines.snc_player.pipeline import Pipeline

__all__ = ["BUILTIN", "Context", "load_contexts", "Mixer", "StemMix", "Pipeline"]
