"""The package's layers, read from its import statements (module level and inside functions):
nothing imports a layer above its own, training / evaluate / serve do not import one another,
and no module imports itself back through others."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gencond"

# Top to bottom; a module may import its own layer or any layer below it.
LAYERS = [
    {"__main__"},
    {"cli"},
    {"methods"},
    {"training", "evaluate", "serve"},  # siblings: none imports another
    {"engine"},
    {"artifacts"},
    {"models", "data", "augment", "losses"},
    {"config", "runtime", "files", "errors", ""},  # "" is gencond/__init__.py: the version and a lazy facade
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}
SIBLINGS = LAYERS[3]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The gencond modules ``path`` imports (``from gencond.x import y`` names the submodule
    ``gencond.x.y`` when there is one, else ``gencond.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "gencond"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gencond":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_every_package_part_has_a_layer():
    assert {layer_of(m) for m in modules()} <= set(RANK), {layer_of(m) for m in modules()} - set(RANK)


def test_nothing_imports_upward_or_between_training_evaluate_and_serve():
    upward, sideways = [], []
    for module, targets in graph().items():
        for target in targets:
            mine, theirs = layer_of(module), layer_of(target)
            if RANK[theirs] < RANK[mine]:
                upward.append(f"{module} -> {target}")
            elif mine != theirs and {mine, theirs} <= SIBLINGS:
                sideways.append(f"{module} -> {target}")
    assert not upward and not sideways, (upward, sideways)


def test_no_import_cycles():
    """A package's ``__init__`` importing its own submodules (to register or re-export them)
    is how registries work, not a cycle; every other edge counts."""
    edges = {m: {t for t in targets if not (t.startswith(m + ".") and t != m)} for m, targets in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path + [node, target]
            if target not in state:
                cycle = visit(target, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle)


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a model module importing the trainer is found."""
    fake = tmp_path / "gencond"
    (fake / "models").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "models" / "bad.py").write_text("def f():\n    from gencond.training.trainer import run_trainer\n")
    (fake / "training" / "trainer.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = graph()
    assert found["gencond.models.bad"] == {"gencond.training.trainer"}
    assert RANK[layer_of("gencond.training.trainer")] < RANK[layer_of("gencond.models.bad")]
