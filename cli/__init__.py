"""The ``scorebridge`` command line, the top layer: it may import core, engines, onnx_models and
bridge, and nothing imports it but ``python -m bridge`` and the console script.

``cli.main`` builds the parser and dispatches; every other module is one command group and
exposes ``register(subparsers)`` (see ``cli.main.COMMANDS``).
"""

__all__: list[str] = []
