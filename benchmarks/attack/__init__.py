"""The hostile-input attack of the hardening review, as a command: ``python -m benchmarks.attack``.

Each area module (``osc``, ``bridge``, ``snc``, ``offline``, ``web``) exposes
``run(workdir: Path, quick: bool) -> AreaResult``; the runner gives each a fresh scratch folder
and reports every finding. Exit 0 means zero crashes, hangs, leaks, stuck notes, partial files
and security findings. ``common`` holds what the areas share; ``osc_client`` and ``ws_client`` are
the raw OSC and HTTP/WebSocket clients of the ``osc`` and ``web`` areas.
"""
