"""Every public function and class has a docstring that documents its arguments and what it
returns (the list of public names and the rule: ``docs/_public_api.py``; the site's build fails
on the same list)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _public_api():
    path = ROOT / "docs" / "_public_api.py"
    spec = importlib.util.spec_from_file_location("interp_docs_public_api", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_public_name_documents_its_arguments_and_return():
    api = _public_api()
    assert len(api.public_objects()) >= 60  # the check sees the whole public API
    missing = api.undocumented()
    assert not missing, "\n".join(f"{name}: {'; '.join(what)}" for name, what in missing.items())


def test_the_check_catches_a_bare_function():
    api = _public_api()

    def bare(model, layer):
        return layer

    def documented(model, layer):
        """Read ``layer`` of ``model``; returns it."""

    assert api.problems(bare) == ["no docstring"]
    assert api.problems(documented) == []


def test_every_subpackage_with_public_names_has_an_api_page():
    pages = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md"))
    for package in _public_api().PACKAGES[1:]:
        assert f"::: {package}\n" in pages, package
    for layer in ("core", "models", "results"):
        for module in (ROOT / "interp" / layer).glob("*.py"):
            if module.stem != "__init__":
                name = f"interp.{layer}.{module.stem}"
                assert f"::: {name}\n" in pages or f"::: {name}." in pages, name
