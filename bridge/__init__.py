"""scorebridge's real-time host: ports, clock, scheduler, engine host, OSC and the CLI."""

__version__ = "0.1.0"
__all__ = ["__version__"]
