"""CI runs the README's test command: ruff, then the test suite, with the pinned ruff."""

from __future__ import annotations

import re
import tomllib

from tests.jackutil import ROOT


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"what CI runs\):\n\n```bash\n(.+?)\n```", readme)
    assert block, "README: no test command after 'this is what CI runs'"
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [block.group(1)]
    steps = block.group(1).split(" && ")
    assert steps == ["bash .ci/setup test", ".venv/bin/python -m ruff check .", ".venv/bin/python -m pytest"]


def test_ruff_is_pinned_in_the_test_extra() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [r for r in pyproject["project"]["optional-dependencies"]["test"] if r.startswith("ruff")]
    assert len(pins) == 1 and re.fullmatch(r"ruff==[0-9.]+", pins[0])
