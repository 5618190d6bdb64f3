"""The docstring examples of interp.probes, interp.circuits and interp.kernels (installed from
the top-level probes/, circuits/, kernels/ folders, so pytest's own doctest collection would
import them under the wrong names); interp/ itself is collected by ``--doctest-modules``."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import interp

MODULES = [f"interp.{package}.{info.name}" for package in ("probes", "circuits", "kernels")
           for info in pkgutil.iter_modules(importlib.import_module(f"interp.{package}").__path__)]


def test_every_package_has_modules():
    assert {m.split(".")[1] for m in MODULES} == {"probes", "circuits", "kernels"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"interp": interp}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
