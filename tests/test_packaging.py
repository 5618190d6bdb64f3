"""The layout as the tools see it: one package ``interp`` with every subpackage inside it,
type-checked and measured as one, and nothing of ours shadowing other packages from the root."""

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
def test_top_level_folders_are_the_packages_inside_interp(name):
    # the repository keeps its top-level folders; each is a link to the package inside interp/
    assert (ROOT / name).resolve() == (ROOT / "interp" / name).resolve()
    assert (ROOT / "interp" / name / "__init__.py").is_file()


def test_transformers_imports_from_the_repository_root():
    # From the root (the working directory is first on sys.path for `python -c`), the link kernels/
    # answers to the name of Hugging Face's `kernels`, which transformers probes for; under that name
    # the package defines nothing, so transformers finds no version instead of re-entering itself.
    out = _python("import transformers.activations, kernels, interp; from interp.kernels import attention_stats; "
                  "print(sorted(n for n in vars(kernels) if not n.startswith('_')))")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("[]")


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
