"""What an attack area reports, and small helpers the areas share."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The kinds of finding the attack counts; any finding fails the run.
KINDS = ("crash", "hang", "leak", "stuck-note", "partial-file", "security")


@dataclass
class Finding:
    kind: str
    probe: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"finding kind {self.kind!r}: expected one of {', '.join(KINDS)}")


@dataclass
class AreaResult:
    area: str
    probes: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, probe: str, detail: str) -> None:
        self.findings.append(Finding(kind, probe, detail))


@dataclass
class CommandOutcome:
    returncode: int | None  # None: still running at the timeout (killed)
    stdout: str
    stderr: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr + self.stdout


def scorebridge(*args: str, cwd: Path | None = None, timeout_s: float = 60.0,
                env: dict[str, str] | None = None) -> CommandOutcome:
    """Run ``python -m bridge ARGS`` from this checkout; a run past ``timeout_s`` is killed."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    try:
        done = subprocess.run([sys.executable, "-m", "bridge", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return CommandOutcome(None, out, err)
    return CommandOutcome(done.returncode, done.stdout, done.stderr)


def check_refused(result: AreaResult, probe: str, outcome: CommandOutcome) -> None:
    """A hostile input must be refused: non-zero exit, a message, no traceback, no hang."""
    result.probes += 1
    if outcome.returncode is None:
        result.add("hang", probe, "still running at the timeout")
    elif outcome.traceback:
        result.add("crash", probe, outcome.stderr.strip().splitlines()[-1][:200])
    elif outcome.returncode == 0:
        result.add("crash", probe, "accepted (exit 0) where it must be refused")
    elif not outcome.stderr.strip():
        result.add("crash", probe, f"exit {outcome.returncode} without a message")


def leftovers(folder: Path, before: set[Path] | None = None) -> list[Path]:
    """Files under ``folder`` that look half-written (temporary or partial names) or are new."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        partial = name.endswith((".partial", ".tmp")) or name.startswith((".snc-", "."))
        if partial or (before is not None and path not in before and path.is_file()):
            found.append(path)
    return found


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB; 0.0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0
