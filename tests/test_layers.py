"""The house is one-way: each package imports only packages below it in the data's path, and no
module imports itself back through others (no circles, between folders or within one)."""
from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Bottom to top: sources -> trajectories -> role views and token spans -> module -> ... -> orchestration.
LAYERS = ("core", "trajectories", "prompting", "datamodules", "lightning_modules", "simulators",
          "evaluation", "pipeline", "cli")
# Rooms of a layer, bottom to top, along the same path; a layer's own top-level modules (its
# __init__, evaluation.tables) sit below all of its rooms.
ROOMS = {"evaluation": ("agent", "steps", "episodes", "gentool", "report")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse(source: str) -> ast.Module:
    """ast.parse in a fresh thread: CPython 3.11's AST constructor can raise a spurious SystemError
    ("recursion depth mismatch", python/cpython#106905) from the calling thread's state, as CI saw."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ast.parse, source).result()


def imported_modules(module: str, source: str, is_package: bool) -> set[str]:
    """Every project module `source` imports, at module level or inside functions."""
    out = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in out if m.split(".")[0] in LAYERS}


def import_graph(files: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """{module: project modules it imports that exist in `files`} for {module: (source, is_package)}."""
    return {m: {t for t in imported_modules(m, src, pkg) if t in files and t != m}
            for m, (src, pkg) in files.items()}


def rank(module: str) -> tuple[int, int]:
    """(layer, room) of a module: room 0 for a layer's top-level modules, i + 1 for its i-th room."""
    parts = module.split(".")
    rooms = ROOMS.get(parts[0], ())
    room = rooms.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in rooms else 0
    return LAYERS.index(parts[0]), room


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  if rank(t) > rank(m) and not (t.split(".")[:2] == m.split(".")[:2]))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. import circles, a package's
    `__init__` included (importing a package runs it)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def project_files() -> dict[str, tuple[str, bool]]:
    files = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            files[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return files


def test_every_layer_is_a_package_of_the_repo():
    assert all((REPO / layer / "__init__.py").is_file() for layer in LAYERS)


def test_no_package_imports_a_layer_above_it():
    assert upward_imports(import_graph(project_files())) == []


def test_no_import_circles():
    assert circles(import_graph(project_files())) == []


@pytest.mark.parametrize("module,line,expected", [
    ("datamodules.views", "from pipeline.stage_runner import run_recipe\n",
     "datamodules.views imports pipeline.stage_runner"),
    ("core.recipe", "    from evaluation.steps import metrics\n",  # a lazy import inside a function counts
     "core.recipe imports evaluation.steps.metrics"),
    ("evaluation.agent.team", "from ..steps.metrics import score\n",  # a room below another
     "evaluation.agent.team imports evaluation.steps.metrics"),
])
def test_an_upward_import_is_caught(module, line, expected):
    files = project_files()
    source, is_pkg = files[module]
    if line.startswith(" "):
        line = "def _late():\n" + line
    files[module] = (source + "\n" + line, is_pkg)
    assert expected in upward_imports(import_graph(files))


def test_a_circle_inside_a_folder_is_caught():
    files = project_files()
    source, is_pkg = files["evaluation.steps.metrics"]
    files["evaluation.steps.metrics"] = (source + "\nfrom .teacher_forced import evaluate_run\n", is_pkg)
    assert any("evaluation.steps.metrics" in group and "evaluation.steps.teacher_forced" in group
               for group in circles(import_graph(files)))
