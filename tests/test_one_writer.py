"""One writer for each kind of file, checked on the source of interp/, case_studies/ and benchmarks/:

- JSON files are written through interp's strict writer (``interp.results.strict_json.dumps``, which
  ``interp.results.protocol.write_json`` uses): no ``json.dump`` at all, and no ``json.dumps`` whose text is
  written to a file (as the argument of a write, or through a name that a write then takes);
  ``json.dumps`` stays for what is printed or hashed;
- parquet is written by ``interp.results.protocol.write_table`` alone: no other ``.to_parquet(`` or
  ``pyarrow.parquet.write_table``;
- scripts write their results through ``interp.results.folders.output_folder``: they import no
  ``interp.results.atomic`` (the low-level primitive under the output folders and checkpoints), save the
  training checkpoints a study makes as it goes.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("interp", "case_studies", "benchmarks")
STRICT_WRITER = Path("interp/results/strict_json.py")
PARQUET_WRITER = (Path("interp/results/protocol.py"), "write_table")
# Calls that put their arguments into a file.
WRITES = {"write_text", "write_bytes", "write", "writelines", "atomic_write_text", "atomic_write_bytes"}
# Scripts that may use interp.results.atomic, and why (none of them for a result).
ATOMIC_IN_SCRIPTS = {
    Path("case_studies/induction_emergence.py"): "trainer_state.json of the training checkpoints it saves as it goes",
}


def _files() -> list[Path]:
    return sorted(p.relative_to(ROOT) for root in SOURCES for p in (ROOT / root).rglob("*.py"))


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _json_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """Calls of ``json.dump``/``json.dumps`` (also when imported by name from json)."""
    local = {a.asname or a.name: a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "json" for a in node.names}
    modules = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "json"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules \
                and f.attr in ("dump", "dumps"):
            yield node, f.attr
        elif isinstance(f, ast.Name) and local.get(f.id) in ("dump", "dumps"):
            yield node, str(local[f.id])


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_write(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = _name(node.func)
    return name in WRITES or (name == "print" and any(k.arg == "file" for k in node.keywords))


def _scope(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    while node in parents and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node = parents[node]
    return node


def json_to_files(path: Path) -> list[str]:
    """Where the source at ``path`` writes JSON to a file without the strict writer."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), str(path))
    parents = _parents(tree)
    found = []
    for call, kind in _json_calls(tree):
        where = f"{path}:{call.lineno}"
        if kind == "dump":
            found.append(f"{where}: json.dump writes a file (use interp.results.protocol.write_json)")
            continue
        node: ast.AST = call
        while node in parents and not isinstance(node, ast.stmt):
            node = parents[node]
            if _is_write(node):
                found.append(f"{where}: json.dumps written to a file (use interp.results.protocol.write_json or "
                             "interp.results.strict_json.dumps)")
                break
        else:  # text = json.dumps(...) ... write(text)
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                scope = _scope(node, parents)
                for write in (n for n in ast.walk(scope) if _is_write(n)):
                    used = {n.id for n in ast.walk(write) if isinstance(n, ast.Name)}
                    if names & used:
                        found.append(f"{where}: json.dumps text written to a file at line {write.lineno}")
                        break
    return found


def parquet_writes(path: Path) -> list[str]:
    """Where the source at ``path`` writes parquet outside ``write_table``: ``.to_parquet(`` or
    pyarrow's ``parquet.write_table``."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), str(path))
    parents = _parents(tree)
    modules = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "pyarrow.parquet"}
    modules |= {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "pyarrow" for a in node.names if a.name == "parquet"}
    functions = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module == "pyarrow.parquet" for a in node.names if a.name == "write_table"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        hand = (isinstance(f, ast.Attribute) and f.attr == "to_parquet") or (
            isinstance(f, ast.Attribute) and f.attr == "write_table" and isinstance(f.value, ast.Name)
            and f.value.id in modules) or (isinstance(f, ast.Name) and f.id in functions)
        if hand and (path, getattr(_scope(node, parents), "name", None)) != PARQUET_WRITER:
            found.append(f"{path}:{node.lineno}: parquet written outside interp.results.protocol.write_table")
    return found


def atomic_in_scripts(path: Path) -> list[str]:
    if path.parts[0] == "interp" or path in ATOMIC_IN_SCRIPTS:
        return []
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), str(path))
    return [f"{path}:{node.lineno}: imports interp.results.atomic (scripts write results through interp.results.folders.output_folder)"
            for node in ast.walk(tree)
            if (isinstance(node, ast.ImportFrom) and node.module == "interp.results.atomic")
            or (isinstance(node, ast.Import) and any(a.name == "interp.results.atomic" for a in node.names))]


def test_the_sources_are_found() -> None:
    files = _files()
    assert STRICT_WRITER in files and PARQUET_WRITER[0] in files
    assert Path("case_studies/_study.py") in files and Path("benchmarks/triton_aot.py") in files


def test_json_files_go_through_the_strict_writer() -> None:
    found = [hit for path in _files() if path != STRICT_WRITER for hit in json_to_files(path)]
    assert not found, "\n".join(found)


def test_parquet_goes_through_write_table() -> None:
    found = [hit for path in _files() for hit in parquet_writes(path)]
    assert not found, "\n".join(found)


def test_scripts_write_results_through_output_folders() -> None:
    found = [hit for path in _files() for hit in atomic_in_scripts(path)]
    assert not found, "\n".join(found)
    for path in ATOMIC_IN_SCRIPTS:  # the exceptions still exist, and still need it
        assert "interp.results.atomic" in (ROOT / path).read_text(encoding="utf-8"), f"{path} no longer needs its exception"


@pytest.mark.parametrize("source, offences", [
    ("import json\njson.dump({}, open('x', 'w'))\n", 1),
    ("import json\nfrom pathlib import Path\nPath('x').write_text(json.dumps({}))\n", 1),
    ("import json\ndef f(out):\n    text = json.dumps({})\n    out.write_text('x.json', text)\n", 1),
    ("from json import dumps as d\natomic_write_text('x', d({}) + '\\n')\n", 1),
    ("import json\nprint(json.dumps({}), file=open('x', 'w'))\n", 1),
    ("import json, hashlib\nprint(json.dumps({}))\nhashlib.sha256(json.dumps({}).encode())\n", 0),
    ("import json\ndef f(out):\n    key = json.dumps([1])\n    return {key: 1}\n", 0),
])
def test_the_check_finds_a_json_file_written_loosely(source: str, offences: int, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "m.py").write_text(source)
    assert len(json_to_files(Path("m.py"))) == offences


@pytest.mark.parametrize("source", [
    "import io\ndef save(df):\n    buf = io.BytesIO()\n    df.to_parquet(buf)\n",
    "import pyarrow.parquet as pq\ndef save(table, buf):\n    pq.write_table(table, buf)\n",
    "from pyarrow import parquet\nparquet.write_table(t, 'x.parquet')\n",
    "from pyarrow.parquet import write_table as w\nw(t, 'x.parquet')\n",
])
def test_the_check_finds_a_parquet_written_by_hand(source: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "m.py").write_text(source)
    assert len(parquet_writes(Path("m.py"))) == 1
    (tmp_path / "m.py").write_text("from interp.results.protocol import write_table\nwrite_table(out, 'x.parquet', df)\n")
    assert parquet_writes(Path("m.py")) == []


def test_committed_results_are_their_writers_own_files() -> None:
    """Every file under case_studies/results and benchmarks/results is listed, with its sha256, in
    the manifest of its folder (or is a report folder of its own), so rerunning a study or
    benchmark into the committed folder replaces exactly its own files. A result regenerated
    without its script (or edited by hand) shows up here."""
    from interp.results.folders import MANIFEST, foreign_entries, read_manifest

    folders = sorted({p.parent for root in ("case_studies/results", "benchmarks/results")
                      for p in (ROOT / root).rglob("*") if p.is_file()})
    assert ROOT / "benchmarks" / "results" in folders
    for folder in folders:
        assert (folder / MANIFEST).is_file(), f"{folder.relative_to(ROOT)} has no {MANIFEST}"
        assert read_manifest(folder)
        foreign = foreign_entries(folder)
        assert not foreign, f"{folder.relative_to(ROOT)}: {foreign} are not listed in its manifest with their sha256"
