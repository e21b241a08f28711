"""The house rules the source tree keeps: modules under 400 lines, the library never drives its own CLI, and no import
circle."""

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vgt"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules along concept lines: {long}"


def test_the_library_and_the_benchmarks_never_import_the_cli():
    callers = [str(p) for p in (*SRC.rglob("*.py"), *BENCHMARKS.glob("*.py"))
               if p.name not in ("cli.py", "__main__.py") and "from vgt.cli import" in p.read_text()]
    assert not callers, f"call the library's stage functions instead of vgt.cli: {callers}"


def _import_graph() -> dict[str, set[str]]:
    """vgt module -> the vgt modules it imports, at module level or inside functions (not the type-only imports
    under `if TYPE_CHECKING:`, which never run)."""
    import ast

    def name_of(path: Path) -> str:
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name_of(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        tree = ast.parse(path.read_text())
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                     for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_modules_even_through_function_level_imports():
    graph = _import_graph()
    assert graph["vgt.packing"] >= {"vgt.pretrained"} and "vgt.pretrained" in graph["vgt.pipeline"]  # it sees edges
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    new = [sorted(c) for c in _cycles(graph)]
    assert not new, f"import circles (a module reaches itself through these): {new}"


def test_config_modules_never_import_the_presets():
    graph = _import_graph()
    config_modules = ["vgt.ae.config", "vgt.ar.config", "vgt.train.config", "vgt.recipe_config", "vgt.vlm.model"]
    assert not [m for m in config_modules if "vgt.presets" in graph[m]]
