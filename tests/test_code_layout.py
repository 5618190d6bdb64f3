"""The package's shape, read from its source: every module under ``interp/`` parsed (nothing
imported), so these tests are fast and fail with the file and line to look at."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "interp"


def _modules() -> dict[str, Path]:
    """``{"interp.heads.units": path}`` for every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _where(module: str, node: ast.AST) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of import nodes under ``if TYPE_CHECKING:`` (never run, so no import at all)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return ids


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> list[tuple[str, str, ast.AST]]:
    """``(imported module of ours, name, node)`` for every import in ``module`` that runs: at module
    level or inside a function (a lazy import is still an import), not under TYPE_CHECKING.
    ``from interp.heads import units`` imports the module ``interp.heads.units``; ``from
    interp.heads.settings import head_label`` the name ``head_label`` of ``interp.heads.settings``."""
    tree, skip, out = TREES[module], _type_checking_only(TREES[module]), []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, "", node) for alias in node.names if alias.name.split(".")[0] == "interp"]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split(".")[0] != "interp":
                continue
            for alias in node.names:
                whole = f"{source}.{alias.name}"
                out.append((whole, "", node) if whole in MODULES else (source, alias.name, node))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# -- private names ------------------------------------------------------------------------------------
def test_no_private_name_is_used_across_modules():
    """A ``_name`` is its module's own: no module imports one from another (``from interp.x import
    _y``), reads one off another module (``x._y``), or calls another module's class's private method
    (``model._in_block``). What another module needs is public, with a docstring."""
    private_methods: dict[str, set[str]] = {}  # _method -> modules whose classes define it
    for module, tree in TREES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for item in cls.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(item.name):
                    private_methods.setdefault(item.name, set()).add(module)
    found = []
    for module, tree in TREES.items():
        aliases = {}  # local name -> module of ours it stands for
        for source, name, node in _imports(module):
            if name and _is_private(name) and source != module:
                found.append(f"{_where(module, node)} imports {name} from {source}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "interp"
            elif not name:
                aliases[next(a.asname or a.name for a in node.names if source.endswith("." + a.name))] = source
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in aliases and aliases[node.value.id] != module:
                found.append(f"{_where(module, node)} reads {ast.unparse(node)} from {aliases[node.value.id]}")
            elif not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                owners = private_methods.get(node.attr, set())
                if owners and module not in owners:
                    found.append(f"{_where(module, node)} calls {ast.unparse(node)}, private to {sorted(owners)}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


# -- import cycles ------------------------------------------------------------------------------------
def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (module level and inside functions)."""
    return {module: {source for source, _, _ in _imports(module) if source in MODULES and source != module}
            for module in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_import_graph_has_no_cycle():
    """No module imports (at module level or inside a function) one that imports it back: the
    modules can be read, tested and changed bottom-up, and a lazy import stays what it is for
    (keeping ``import interp`` and the CLI's parser light, or an optional package optional), not a
    way to hide a cycle."""
    graph = import_graph()
    fixed = {("interp.heads.units", "interp.heads.head_scan"), ("interp.kernels.triton_stats",
             "interp.kernels.attention_stats"), ("interp.probes.knob_report", "interp.probes.knob")}
    back = {(a, b) for a, b in fixed if b in graph[a]}
    assert not back, f"imports that closed the cycles fixed in issue 24 are back: {sorted(back)}"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The package's folders as layers, bottom first: a module imports only from its own layer and the
# ones below it, so each folder can be read knowing only the folders under it.
LAYERS = (
    ("interp", "interp.errors", "interp.logs"),
    ("interp.core",),  # the hook core: Model, sites, tracing, attention, masks, adapters
    ("interp.results",),  # the result protocol, its reader, output folders
    ("interp.models",),  # loading: specs, bundled models, model files, the model cache
    ("interp.kernels",),  # tensor reductions (they use core's mask builder)
    ("interp.heads",),
    ("interp.neurons", "interp.probes", "interp.circuits"),
    ("interp.cli", "interp.app"),
)


def _layer(module: str) -> int:
    """The index in ``LAYERS`` of the longest prefix of ``module`` (``interp`` itself is the root)."""
    best = [(len(p), i) for i, names in enumerate(LAYERS) for p in names if module == p or (p != "interp" and module.startswith(p + "."))]
    assert best, f"{module} is in no layer of LAYERS: add its folder"
    return max(best)[1]


def test_folders_import_only_from_the_layers_below():
    up = [f"{a} imports {b}" for a, targets in import_graph().items() for b in sorted(targets) if _layer(b) > _layer(a)]
    assert not up, "imports from a higher layer:\n" + "\n".join(up)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()  # function-level imports count: units imports causal inside a method
    assert "interp.heads.causal" in graph["interp.heads.units"]


# -- one of each ----------------------------------------------------------------------------------------
def test_error_classes_are_defined_in_errors():
    """Every error class interp raises on purpose is defined in interp/errors.py (modules that
    document one import it from there)."""
    errors = {n.name for n in TREES["interp.errors"].body if isinstance(n, ast.ClassDef)}
    elsewhere = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if module != "interp.errors" and isinstance(node, ast.ClassDef) and \
                    any(ast.unparse(b) in errors for b in node.bases):
                elsewhere.append(f"{_where(module, node)} {node.name}")
    assert not elsewhere, elsewhere


def test_head_labels_come_from_one_helper():
    """``L3H5`` is written only by interp.core.sites.head_label (and read by parse_head_label)."""
    found = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and module != "interp.core.sites":
                parts = node.values
                for i in range(len(parts) - 2):
                    a, b, c = parts[i : i + 3]
                    if isinstance(a, ast.Constant) and str(a.value).endswith("L") and \
                            isinstance(b, ast.FormattedValue) and isinstance(c, ast.Constant) and \
                            str(c.value).startswith("H"):
                        found.append(f"{_where(module, node)} {ast.unparse(node)}")
    assert not found, "head labels built by hand:\n" + "\n".join(found)
