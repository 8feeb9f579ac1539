"""The base layer: what engines and the bridge both build on, importing nothing else of ours.

Events and their time units, errors, the engine contract and its parameters, safe file access,
MIDI-file reading and atomic file writing. ``docs/architecture.md`` gives the layers and the rule.
"""
