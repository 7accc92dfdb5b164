"""The shape of the code: no import cycle in privbench/, no plugin imports another plugin, the
public API covers what the built-in plugins use."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runtime_imports(path: Path, prefix: str) -> set[str]:
    """Modules under ``prefix`` that ``path`` imports at run time (anywhere in the module, also in
    functions), leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(prefix))
    return found


def module_name(path: Path) -> str:
    """``privbench/parties/roles.py`` -> ``privbench.parties.roles``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def privbench_graph() -> dict[str, set[str]]:
    paths = list((ROOT / "privbench").rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        graph[name] = {m for m in runtime_imports(path, "privbench") if m in modules and m != name}
    return graph


def every_import(path: Path, prefix: str) -> set[str]:
    """Every module under ``prefix`` that ``path`` names in an import, ``TYPE_CHECKING`` included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(prefix))
    return found


def test_core_and_view_do_not_import_each_other():
    assert "privbench.view" not in every_import(ROOT / "privbench" / "core.py", "privbench")
    assert "privbench.core" in every_import(ROOT / "privbench" / "view.py", "privbench")
    assert "privbench.view" in every_import(ROOT / "privbench" / "api.py", "privbench")  # the check reads


# What a party's own process runs may not reach the harness, the orchestration or the store.
HARNESS_SIDE = {"privbench.harness", "privbench.matrix", "privbench.executors", "privbench.store",
                "privbench.scoring", "privbench.artifacts", "privbench.schedule", "privbench.cli",
                "privbench.reproduce", "privbench.reproduce.config", "privbench.reproduce.plan",
                "privbench.reproduce.checks", "privbench.reproduce.table", "privbench.reproduce.running",
                "privbench.preflight", "privbench.context",
                "privbench.parties.host", "privbench.parties.launcher"}


def test_party_code_never_reaches_the_harness():
    graph = privbench_graph()
    party_side = ["privbench.parties.child", "privbench.parties.roles", "privbench.parties.channel",
                  "privbench.parties.messages", "privbench.parties.guard", "privbench.parties.sandbox",
                  "privbench.view"]
    for module in party_side:
        reached, queue = set(), [module]
        while queue:  # everything it imports, directly or not
            for nxt in graph[queue.pop()] - reached:
                reached.add(nxt)
                queue.append(nxt)
        assert not reached & HARNESS_SIDE, f"{module} reaches {sorted(reached & HARNESS_SIDE)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_privbench_has_no_import_cycle():
    graph = privbench_graph()
    assert "privbench.harness" in graph and graph["privbench.executors"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_plugin_imports_another_plugin_or_a_private_module():
    for path in (ROOT / "plugins").glob("*.py"):
        if path.stem in ("__init__", "datasets"):  # datasets registers privbench's own loaders
            continue
        imported = runtime_imports(path, "privbench")
        assert not {m for m in imported if m.startswith("privbench_plugins")}, path.name
        private = {m for m in imported if m.startswith("privbench.")
                   and m.split(".")[1] not in ("api",) and not m.startswith("privbench.api")}
        assert not private, f"{path.name} imports {sorted(private)}; plugins use privbench.api"


def test_the_example_plugin_uses_the_public_api_only():
    imported = runtime_imports(ROOT / "tests" / "example_plugin" / "privbench_example.py", "privbench")
    assert imported and all(m.startswith("privbench.api") for m in imported)


def test_one_module_owns_the_plan_and_one_the_artifacts():
    graph = privbench_graph()
    assert "privbench.worker" not in graph  # the old home of stages and jobs is gone
    for module in ("privbench.matrix", "privbench.executors", "privbench.harness"):
        source = (ROOT / "privbench" / f"{module.split('.')[1]}.py").read_text()
        assert "def first_jobs" not in source and "def priority" not in source, module
        assert "class ArtifactCache" not in source, module
    assert "torch.load(" not in (ROOT / "privbench" / "context.py").read_text()


def test_every_package_is_in_the_distribution():
    """pyproject's explicit package list names every package under privbench/, so a non-editable
    install (pip install .) ships the parties and the reproductions too."""
    import tomllib
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(root).parts) for init in (root / "privbench").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
