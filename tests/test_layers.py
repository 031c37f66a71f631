"""The package's floors (DESIGN.md section 9): every module imports only from its own floor or below,
function-local imports included, never a private name of another module, and no import cycles.
A "specdifftree.module:name" string (a lazy registry entry: search methods, SMC potentials, prior
kinds) counts as an import of that module and must name a public name it defines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "specdifftree"

FLOORS = {  # bottom to top
    "entries": 1, "errors": 1, "files": 1, "machine": 1, "paths": 1, "config": 1, "progress": 1, "report": 1,
    "tracking": 1,
    "data": 2,
    "prior": 3, "rewards": 3, "sensorlm": 3,
    "search": 4, "validate": 4,
    "problem": 5,
    "amortize": 6, "bench": 6, "train": 6,
    "experiments": 7,
    "api": 8, "cli": 8, "__init__": 8,
    # S-ADT at search time is a search method: the flow network it reads and the methods built on it
    # sit with search, so that the method registry may name them; amortize's trainer stays on floor 6.
    "amortize.flow": 4, "amortize.losses": 4, "amortize.sadt": 4,
    # the sensorlm trainer keeps its resume state as the curriculum does (train/state.py)
    "sensorlm.train": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    """The floor of a module: its own FLOORS entry ("amortize.sadt") if it has one, else its top-level package's."""
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    own = ".".join(parts[1:3])
    if own in FLOORS:
        return FLOORS[own]
    assert key in FLOORS, f"{module} is on no floor: add '{key}' to FLOORS (and to DESIGN.md's layers)"
    return FLOORS[key]


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported specdifftree module, names imported from it) for every import in the file,
    function-local ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("specdifftree"):
            names = [a.name for a in node.names]
            submodules = [f"{node.module}.{n}" for n in names if (ROOT.parent / f"{node.module}.{n}".replace(".", "/")).exists()
                          or (ROOT.parent / (f"{node.module}.{n}".replace(".", "/") + ".py")).exists()]
            out.append((node.lineno, node.module, [n for n in names if f"{node.module}.{n}" not in submodules]))
            out.extend((node.lineno, m, []) for m in submodules)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names if a.name.startswith("specdifftree"))
    return out


ENTRY = re.compile(r"(specdifftree(?:\.\w+)*):(\w+)")


def string_references(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every "specdifftree.module:name" string constant in the file."""
    return [(node.lineno, *m.groups()) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := ENTRY.fullmatch(node.value))]


def defines(path: Path, name: str) -> bool:
    """Whether the module at `path` binds `name` at its top level (def, class, assignment, import)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(x, ast.Name) and x.id == name for x in targets):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_stay_public(module):
    path = MODULES[module]
    for line, target, names in imports(path):
        where = f"{path.relative_to(ROOT.parent)}:{line}"
        if target != "specdifftree":
            assert floor(target) <= floor(module), f"{where}: {module} (floor {floor(module)}) imports " \
                                                    f"{target} (floor {floor(target)}), a floor above it"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private or target == module, f"{where}: imports private {private} from {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_string_references_point_down_and_exist(module):
    path = MODULES[module]
    for line, target, name in string_references(path):
        where = f"{path.relative_to(ROOT.parent)}:{line}"
        assert target in MODULES, f"{where}: '{target}:{name}' names no module of the package"
        assert floor(target) <= floor(module), f"{where}: {module} (floor {floor(module)}) names " \
                                                f"'{target}:{name}' (floor {floor(target)}), a floor above it"
        assert not name.startswith("_"), f"{where}: names private '{name}' of {target}"
        assert defines(MODULES[target], name), f"{where}: {target} defines no '{name}'"


def test_no_import_cycles():
    graph = {m: {t for _, t, _ in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}  # a package's own __init__
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t] if t in stack else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


SPEC_GRAMMARS = {  # modules that split "a:b" strings of their own grammar, not prior specs
    "specdifftree.entries": "lazy registry entries, module:function",
    "specdifftree.rewards.plugins": "reward specs, FILE.py:fn",
}


def test_prior_specs_are_parsed_in_one_function():
    """`--prior` specs (and backbone references) are split into kind and argument only by
    prior.spec.parse_prior; everything else asks it."""
    parsers = [m for m, p in MODULES.items() if "def parse_prior(" in p.read_text()]
    assert parsers == ["specdifftree.prior.spec"]
    offenders = []
    for module, path in MODULES.items():
        if module in SPEC_GRAMMARS:
            continue
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ('partition(":")', 'startswith("hf:', 'startswith("gguf:', 'startswith("markov:')):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line_no}: {line.strip()}")
    text = MODULES["specdifftree.prior.spec"].read_text()
    in_parser = text.split("def parse_prior(")[1].split("\ndef ")[0]
    outside = [o for o in offenders if not o.startswith("specdifftree/prior/spec.py")]
    assert not outside, "prior specs parsed outside prior.spec.parse_prior:\n" + "\n".join(outside)
    spec_lines = [o.split(": ", 1)[1] for o in offenders if o.startswith("specdifftree/prior/spec.py")]
    assert spec_lines and all(line in in_parser for line in spec_lines), spec_lines
