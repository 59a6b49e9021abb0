"""The import graph of the packages (every ``import`` statement, also those inside functions, read with
``ast``): no import circle, imports go one way (lattice ← flows ← mcmc; observables imports only
lattice), kernels import nothing from files, orchestration, the CLI or observables, and nothing imports
``mcmc.cli``."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lattice", "flows", "mcmc", "observables")
ALLOWED = {  # which top-level packages each package may import
    "lattice": {"lattice"},
    "flows": {"lattice", "flows"},
    "mcmc": {"lattice", "flows", "mcmc", "observables"},
    "observables": {"lattice", "observables"},
}


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules():
    """{module name: source path} of every module of the four packages."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(name, tree, modules):
    """The project modules one module imports (``from a import b`` counts a.b when that is a module)."""
    package = name if (ROOT / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph():
    modules = project_modules()
    return {name: imported(name, ast.parse(path.read_text()), modules) for name, path in modules.items()}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def test_graph_is_read():
    assert "mcmc.kernels.hmc" in GRAPH and "mcmc.kernels.integrators" in GRAPH["mcmc.kernels.hmc"]


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    upward = {
        (m, t) for m, targets in GRAPH.items() if m.split(".")[0] == package
        for t in targets if t.split(".")[0] not in ALLOWED[package]
    }
    assert upward == set()


def test_kernels_import_only_kernels_and_lower_layers():
    bad = {
        (m, t) for m, targets in GRAPH.items() if m.startswith("mcmc.kernels")
        for t in targets if t.split(".")[0] in ("mcmc", "observables") and not t.startswith("mcmc.kernels")
    }
    assert bad == set()


def test_nothing_imports_the_cli():
    assert {m for m, targets in GRAPH.items() if "mcmc.cli" in targets} == set()


APPLICATION = {"mcmc.cli", "mcmc.commands", "mcmc.compare"}


def test_the_card_stops_at_the_edge():
    """The card module is read by the application (cli, commands, compare) and by setup, which turns the
    card into a plan of plain values; the job layer (job, training, curriculum, resume, budget), the
    kernels, the driver, the files and the libraries never see it."""
    readers = {m for m, targets in GRAPH.items() if "mcmc.card" in targets}
    assert readers <= APPLICATION | {"mcmc.setup"}


def test_only_the_application_imports_setup():
    """Nothing below the edge reaches back up to it."""
    assert {m for m, targets in GRAPH.items() if "mcmc.setup" in targets} <= APPLICATION


def _is_sampler_kind(node):
    return (isinstance(node, ast.Attribute) and node.attr == "kind"
            and isinstance(node.value, ast.Attribute) and node.value.attr == "sampler")


def _kind_dispatchers(modules):
    """Modules that compare ``<x>.sampler.kind`` with something or look something up by it."""
    found = set()
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            operands = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            operands += [node.slice] if isinstance(node, ast.Subscript) else []
            if any(_is_sampler_kind(op) for op in operands):
                found.add(name)
    return found


def test_only_setup_dispatches_on_the_sampler_kind(tmp_path):
    """A comparison with ``sampler.kind`` or a lookup by it stands in the card module (its physics hash)
    and in setup (the one dispatch), nowhere else: below the edge a sampler spec says what its kind needs
    (reading the kind as a label, for a file attribute or a log line, is fine)."""
    assert _kind_dispatchers(project_modules()) <= {"mcmc.card", "mcmc.setup"}
    probe = tmp_path / "probe.py"
    probe.write_text("def f(card):\n    return card.sampler.kind == 'flow' or TABLE[plan.sampler.kind]\n")
    assert _kind_dispatchers({"probe": probe}) == {"probe"}  # the check can fail


def test_the_card_sections_are_read_only_where_the_card_is():
    """The section models (``mcmc.card_sections``) are part of the card: read by ``mcmc.card`` and by the
    card's own readers only."""
    readers = {m for m, targets in GRAPH.items() if "mcmc.card_sections" in targets}
    assert readers <= APPLICATION | {"mcmc.setup", "mcmc.card"}
