"""Score a video in one command: picture -> valence-arousal curve -> form on the cut -> theme
developed and harmonized -> FluidSynth stems -> master, SNC file and the video with its
soundtrack (docs/score.md). The command is ``scorebridge score`` (cli/score.py).

Nothing is imported here: the stages load numpy, ONNX Runtime, PyAV and the synthesizer
tools when their modules are imported.
"""

__all__: list[str] = []
