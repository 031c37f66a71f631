"""The package's floors (DESIGN.md section 9): every module imports only from its own floor or below,
function-local imports included, never a private name of another module, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "specdifftree"

FLOORS = {  # bottom to top
    "errors": 1, "files": 1, "machine": 1, "paths": 1, "config": 1, "report": 1, "tracking": 1,
    "data": 2,
    "prior": 3, "rewards": 3,
    "search": 4,
    "problem": 5,
    "amortize": 6, "bench": 6, "train": 6,
    "experiments": 7,
    "api": 8, "cli": 8, "__init__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
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
    "specdifftree.search.registry": "method and potential entries, module:function",
    "specdifftree.rewards.plugins": "reward specs, FILE.py:fn",
}


def test_prior_specs_are_parsed_in_one_function():
    """`--prior` specs (and backbone references) are split into kind and argument only by
    problem.parse_prior; everything else asks it."""
    parsers = [m for m, p in MODULES.items() if "def parse_prior(" in p.read_text()]
    assert parsers == ["specdifftree.problem"]
    offenders = []
    for module, path in MODULES.items():
        if module in SPEC_GRAMMARS:
            continue
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ('partition(":")', 'startswith("hf:', 'startswith("gguf:', 'startswith("markov:')):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line_no}: {line.strip()}")
    text = MODULES["specdifftree.problem"].read_text()
    in_parser = text.split("def parse_prior(")[1].split("\ndef ")[0]
    outside = [o for o in offenders if not o.startswith("specdifftree/problem.py")]
    assert not outside, "prior specs parsed outside problem.parse_prior:\n" + "\n".join(outside)
    problem_lines = [o.split(": ", 1)[1] for o in offenders if o.startswith("specdifftree/problem.py")]
    assert problem_lines and all(line in in_parser or "loader.partition" in line for line in problem_lines), problem_lines
