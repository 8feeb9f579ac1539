"""The layer rule of docs/architecture.md, checked on the source (CI runs it with the suite).

Our packages, lowest first: ``core`` (imports nothing of ours), ``onnx_models`` and ``engines``
(the plugins), ``bridge`` (host, then control, then the session), ``cli`` (the commands).
``training`` sits beside the runtime: it may use the runtime, the runtime never imports it.
A package imports only packages below it, there are no import cycles among our modules, no
runtime module imports torch, and no tracked file names a developer's machine path.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("core", "onnx_models", "engines", "bridge", "cli")
OURS = (*RUNTIME, "training")
# What each package may import of ours (itself included).
ALLOWED = {
    "core": {"core"},
    "onnx_models": {"core", "onnx_models"},
    "engines": {"core", "onnx_models", "engines"},
    "bridge": {"core", "onnx_models", "engines", "bridge"},
    "cli": {"core", "onnx_models", "engines", "bridge", "cli"},
    "training": {"core", "onnx_models", "engines", "training"},
}
# ``python -m bridge`` is the command's second name: its two lines hand over to the CLI.
EXCEPTIONS = {("bridge.__main__", "cli")}
# Inside the bridge: the host never imports control or the session; control never imports
# the session. (Modules not listed are free-standing helpers.)
HOST = {"bridge.host", "bridge.router", "bridge.clock", "bridge.output", "bridge.inbox",
        "bridge.ports", "bridge.jack", "bridge.config"}
# bridge.addresses is control's: the host knows nothing of OSC.
CONTROL = {"bridge.osc", "bridge.osc_packet", "bridge.session_osc", "bridge.control", "bridge.maps",
           "bridge.map_files",
           "bridge.learn", "bridge.feedback", "bridge.web", "bridge.affect_follow", "bridge.targets",
           "bridge.addresses"}
SESSION = {"bridge.session", "bridge.session_ports"}
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|home/\w+|root|Users/\w+)/")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """Modules ``name`` imports: every import, or only those run when it is imported."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = dict(_modules())


def _ours(module: str) -> str | None:
    """The longest module of ours that ``module`` names (``a.b.c`` may be a name in ``a.b``)."""
    while module:
        if module in MODULES:
            return module
        module = module.rpartition(".")[0]
    return None


def _group(module: str, groups: set[str]) -> bool:
    return any(module == g or module.startswith(g + ".") for g in groups)


def test_every_package_imports_only_packages_below_it():
    broken = []
    for name, path in MODULES.items():
        package = name.split(".")[0]
        for imported in _imports(name, path, top_level_only=False):
            target = imported.split(".")[0]
            if target in OURS and target not in ALLOWED[package] and (name, target) not in EXCEPTIONS:
                broken.append(f"{name} imports {imported}")
    assert not broken, "layer rule broken (docs/architecture.md):\n" + "\n".join(sorted(broken))


def test_inside_the_bridge_the_host_and_control_never_reach_up():
    broken = []
    for name, path in MODULES.items():
        if _group(name, HOST):
            above = CONTROL | SESSION
        elif _group(name, CONTROL):
            above = SESSION
        else:
            continue
        for imported in _imports(name, path, top_level_only=False):
            if _group(imported, above):
                broken.append(f"{name} imports {imported}")
    assert not broken, "bridge layers broken (docs/architecture.md):\n" + "\n".join(sorted(broken))


def test_the_bridge_spells_its_own_addresses_in_one_table():
    """Code names the bridge's OSC addresses through bridge.addresses, never as a literal."""
    spelled = []
    for name, path in MODULES.items():
        if name == "bridge.addresses" or name.split(".")[0] not in RUNTIME:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/scorebridge"):
                spelled.append(f"{name}:{node.lineno}: {node.value[:60]!r}")
    assert not spelled, "addresses spelled outside bridge/addresses.py:\n" + "\n".join(spelled)


def test_no_import_cycles_among_our_modules():
    graph = {name: {m for i in _imports(name, path, top_level_only=True) if (m := _ours(i)) and m != name}
             for name, path in MODULES.items()}
    # A package's __init__ importing its own submodules is how Python packages work; a
    # submodule importing its package's __init__ back is the cycle we look for.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_runtime_module_imports_torch():
    offenders = sorted(name for name, path in MODULES.items() if name.split(".")[0] in RUNTIME
                       and any(i == "torch" or i.startswith("torch.") for i in _imports(name, path, False)))
    assert not offenders, f"torch imported by runtime modules: {offenders}"


def test_no_tracked_file_names_a_machine_path():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.fail("git ls-files listed nothing: run the suite from a clone")
    offenders = []
    for rel in files:
        path = ROOT / rel
        # Result files are records of a run: they quote the process lists of the machine that ran it.
        if (rel == "tests/test_architecture.py" or rel.startswith("benchmarks/results/")
                or path.suffix not in {".py", ".md", ".toml", ".sh", ".txt", ".json", ".cfg", ".yml", ".yaml", ""}):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()[:100]}")
    assert not offenders, "machine paths:\n" + "\n".join(offenders[:40])


def test_the_checks_see_a_violation():
    """The checks themselves can fail: a planted engines -> bridge import is caught."""
    planted = ROOT / "engines" / "_planted_violation.py"
    planted.write_text("from bridge.session import Session\n")
    try:
        imports = _imports("engines._planted_violation", planted, top_level_only=False)
        assert "bridge.session" in imports and "bridge" not in ALLOWED["engines"]
    finally:
        planted.unlink()
