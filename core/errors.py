"""The scorebridge exception hierarchy. Imports nothing, so any module may raise these."""

__all__ = [
    "ScoreBridgeError",
    "ConfigError",
    "BackendError",
    "PortError",
    "EngineError",
    "ParameterError",
    "ModelLoadError",
    "MappingError",
    "CodecError",
]


class ScoreBridgeError(Exception):
    """Base class of every error scorebridge raises on purpose."""


class ConfigError(ScoreBridgeError):
    """A configuration file or command-line option is invalid."""


class BackendError(ScoreBridgeError):
    """A MIDI backend is unknown or cannot be used on this machine."""


class PortError(ScoreBridgeError):
    """A MIDI port could not be opened, found or used."""


class EngineError(ScoreBridgeError):
    """An engine is unknown, failed to load, or failed while processing."""


class ParameterError(ScoreBridgeError, ValueError):
    """A parameter name or value does not match the engine's declaration."""


class ModelLoadError(ScoreBridgeError):
    """An exported model or its model card is missing, corrupt or mismatched."""


class MappingError(ScoreBridgeError):
    """A control map (midi_maps/*.toml) is invalid."""


class CodecError(ScoreBridgeError):
    """An SNC file is corrupt, unsupported or exceeds the reader's limits."""
