"""The package's import graph: no cycles between modules, and the layer rules of ARCHITECTURE.md.

Every `import` / `from ... import` counts, at any depth: a lazy import inside a function is still
a dependency (it only moves the moment it is loaded), so a cycle through one is still a cycle.

Edges go from a module to each package module the statement loads: `import mammo_tui.a.b` and
`from mammo_tui.a import b` (b a submodule) load mammo_tui.a.b; `from mammo_tui.a import name`
(name not a submodule) loads mammo_tui.a (its `__init__`). The parent packages Python runs first
are not edges: the rules are about which code uses which, and an edge to every parent package
would make each `__init__` that imports a submodule a false cycle. `mammo_tui.data.__init__`'s
PEP 562 facade (names loaded with importlib on first use) is invisible here; the package's own
modules import the data submodules directly.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import mammo_tui

PACKAGE = "mammo_tui"
ROOT = Path(mammo_tui.__file__).resolve().parent

# Rule: nothing below the UI imports it. The CLI is the exception: it is the entry point above
# everything (ARCHITECTURE.md) and opens the app lazily, inside the subcommands that use it.
ENTRY_POINTS = {"mammo_tui.cli", "mammo_tui.__main__"}
# The application layer (app/): the faces call it; it launches the drivers and the engine. The
# engine reads only its request type from it; the drivers also plan through it (a CV or a sweep
# with base = auto plans once, in app.planning). An import of the package itself (its __init__
# loads app.launch) from below would be a cycle: test_no_import_cycles catches it.
APP_BUT_REQUESTS = ("mammo_tui.app.launch", "mammo_tui.app.fixes", "mammo_tui.app.nextsteps",
                    "mammo_tui.app.planning")
APP_ABOVE_DRIVERS = ("mammo_tui.app.launch", "mammo_tui.app.fixes", "mammo_tui.app.nextsteps")
# what the wizard imports at start-up: no torch, no engine, no driver, at any depth
TORCH_FREE_APP = ("mammo_tui.app.requests", "mammo_tui.app.planning", "mammo_tui.app.fixes")
# the read model: one way to read a run directory, for every reader; it stands on the floor alone
READ_MODEL = ["mammo_tui.runread", "mammo_tui.stats"]
ABOVE_THE_FLOOR = ("mammo_tui.app", "mammo_tui.drivers", "mammo_tui.engine", "mammo_tui.tracking",
                   "mammo_tui.report", "mammo_tui.cv_report", "mammo_tui.report_parts", "mammo_tui.evaluate",
                   "torch", "torchvision")
# a report reads files: it never trains, plans or imports torch
REPORTS = ["mammo_tui.report", "mammo_tui.cv_report", "mammo_tui.report_parts"]
# the config is the floor: it names its own keys and checks its own values
CONFIG_MAY_IMPORT = {"mammo_tui", "mammo_tui.errors", "mammo_tui.labels"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """`from ..x import y` inside `module` -> the absolute name of `..x`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every dotted name an import statement in the file loads (external ones included):
    `from pkg import sub` loads pkg.sub when sub is a module of the package, else pkg."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):  # every depth: functions, methods, try / if blocks
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in modules else base)
    return names


def to_package_module(name: str, modules: dict[str, Path]) -> str | None:
    """The package module a dotted name loads: the longest prefix that is one of its modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> package modules it imports, module -> every top-level name it imports)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = imported_names(module, path, modules)
        targets = {to_package_module(name, modules) for name in names}
        graph[module] = {t for t in targets if t is not None and t != module}
        external[module] = {name.split(".")[0] for name in names}
    return graph, external


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, i.e. the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def edges_within(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(rule: str, sources: list[str], forbidden: tuple[str, ...], graph, external) -> list[str]:
    found = []
    for module in sources:
        for target in sorted(graph[module]):
            if any(in_package(target, f) for f in forbidden):
                found.append(f"{rule}: {module} imports {target}")
        for name in sorted(external[module]):
            if name in forbidden:
                found.append(f"{rule}: {module} imports {name}")
    return found


# -- the checker checks what it should ------------------------------------------------------------
def test_tarjan_finds_cycles_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"f"}, "g": set()}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]
    # the same answer as the stdlib's sorter on the cyclic part
    try:
        TopologicalSorter({k: v - {k} for k, v in graph.items()}).prepare()
    except CycleError:
        pass
    else:
        raise AssertionError("graphlib should see a cycle too")
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_lazy_relative_and_submodule_imports_are_edges(tmp_path):
    source = ("import os\n"
              "def f():\n"
              "    from mammo_tui.data import dicom\n"
              "    from ..labels import CLASS_NAMES\n"
              "    from ..tui.state import fmt\n"
              "    class C:\n"
              "        def g(self):\n"
              "            import mammo_tui.engine.models as m\n"
              "            from . import cv\n")
    path = tmp_path / "x.py"
    path.write_text(source)
    modules = package_modules()
    names = imported_names("mammo_tui.drivers.x", path, modules)
    assert {to_package_module(n, modules) for n in names} - {None} == {
        "mammo_tui.data.dicom", "mammo_tui.labels", "mammo_tui.tui.state", "mammo_tui.engine.models",
        "mammo_tui.drivers.cv"}
    assert "os" in names


def test_the_graph_sees_the_package():
    graph, external = import_graph()
    assert "mammo_tui.engine.trainer" in graph and "mammo_tui.tui.app" in graph
    assert "mammo_tui.tui.dashboard" in graph["mammo_tui.tui.app"]  # a module-level import
    assert "mammo_tui.app.launch" in graph["mammo_tui.tui.dashboard_engine"]  # a lazy one
    assert "mammo_tui.engine.trainer" in graph["mammo_tui.app.launch"]  # a lazy one
    assert "textual" in external["mammo_tui.tui.app"]


# -- the package ----------------------------------------------------------------------------------
def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = strongly_connected(graph)
    report = [f"cycle of {len(c)} modules: {', '.join(c)}\n    " + "\n    ".join(edges_within(c, graph))
              for c in cycles]
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(report)


def test_layer_rules():
    """ARCHITECTURE.md: the faces (CLI, screens) on top, then the application layer, the drivers,
    the engine; run directories and the config at the bottom. Each layer imports only below it."""
    graph, external = import_graph()
    modules = sorted(graph)
    below_ui = [m for m in modules if not in_package(m, "mammo_tui.tui") and m not in ENTRY_POINTS]
    run_dir_layer = ["mammo_tui.rundir", "mammo_tui.runlog"]
    engine = [m for m in modules if in_package(m, "mammo_tui.engine")]
    drivers = [m for m in modules if in_package(m, "mammo_tui.drivers")]
    app = [m for m in modules if in_package(m, "mammo_tui.app")]
    faces = [m for m in modules if in_package(m, "mammo_tui.tui") or m in ENTRY_POINTS]
    found = (violations("below the UI", below_ui, ("mammo_tui.tui", "textual"), graph, external)
             + violations("run-directory layer", run_dir_layer,
                          ("mammo_tui.app", "mammo_tui.drivers", "mammo_tui.engine", "mammo_tui.tui", "textual"),
                          graph, external)
             + violations("engine", engine, ("mammo_tui.drivers", "mammo_tui.tui", "textual", *APP_BUT_REQUESTS),
                          graph, external)
             + violations("drivers", drivers, ("mammo_tui.tui", "textual", *APP_ABOVE_DRIVERS), graph, external)
             + violations("app", app, ("mammo_tui.tui", "textual"), graph, external)
             + violations("torch-free app stages", list(TORCH_FREE_APP),
                          ("mammo_tui.engine", "mammo_tui.drivers", "torch", "torchvision"), graph, external)
             + violations("faces", faces, ("mammo_tui.engine",), graph, external)
             + violations("read model", READ_MODEL, ABOVE_THE_FLOOR, graph, external)
             + violations("reports", REPORTS, ("mammo_tui.app", "mammo_tui.engine", "torch", "torchvision"),
                          graph, external)
             + [f"config: mammo_tui.config imports {target}" for target in sorted(graph["mammo_tui.config"])
                if target not in CONFIG_MAY_IMPORT])
    assert not found, "layer rules broken:\n" + "\n".join(found)


def test_layer_rules_can_fail():
    graph = {"mammo_tui.engine.trainer": {"mammo_tui.drivers.cv"}, "mammo_tui.rundir": set()}
    external = {"mammo_tui.engine.trainer": {"numpy"}, "mammo_tui.rundir": {"textual"}}
    assert violations("engine", ["mammo_tui.engine.trainer"], ("mammo_tui.drivers",), graph, external) == [
        "engine: mammo_tui.engine.trainer imports mammo_tui.drivers.cv"]
    assert violations("run-directory layer", ["mammo_tui.rundir"], ("textual",), graph, external) == [
        "run-directory layer: mammo_tui.rundir imports textual"]


def test_every_subpackage_ships_in_the_wheel():
    """pyproject lists its packages by hand: a new subpackage missing there works in an editable
    install (this checkout) and is absent from a wheel (ImportError on a user's machine)."""
    import tomllib

    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
                 ["tool"]["setuptools"]["packages"])
    subpackages = {module_name(init) for init in ROOT.rglob("__init__.py")}
    assert subpackages - listed == set()
