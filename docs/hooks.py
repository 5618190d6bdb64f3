"""mkdocs hooks: the tutorials rendered with their outputs, plotly.js served once, the CLI's help
pasted in, and the docstring check (a public name whose docstring misses its arguments or its
return fails ``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

DOCS = Path(__file__).resolve().parent
log = logging.getLogger("mkdocs.hooks.interp")


def _load(relative: str):
    path = DOCS / relative
    spec = importlib.util.spec_from_file_location(f"interp_docs_{path.stem.strip('_')}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def on_pre_build(config) -> None:
    for name, missing in _load("_public_api.py").undocumented().items():
        log.warning(f"{name}: its docstring misses {'; '.join(missing)}")


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    execute = _load("tutorials/_execute.py")
    for source in execute.sources():
        if os.environ.get("INTERP_DOCS_EXECUTE", "1") == "0":  # quick edits of the prose: no outputs
            notebook = execute.unexecuted(source)
        else:
            notebook, seconds = execute.executed(source)  # runs it only when it or interp changed
            log.info(f"tutorial {source.name}: executed in {seconds:.0f} s")
        # a File with a real src_dir: mkdocs-jupyter wraps it and reads abs_src_path from there
        files.append(File(f"tutorials/{notebook.name}", src_dir=str(notebook.parent.parent), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    files.append(File.generated(config, "assets/plotly.min.js", abs_src_path=str(plotly_js)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    marker = "<!-- interp help -->"
    if marker not in markdown:
        return markdown
    import argparse

    from interp.cli import build_parser

    parser = build_parser()
    parts = [f"```text\n{parser.format_help()}```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts.append(f"### interp {name}\n\n```text\n{sub.format_help()}```")
    return markdown.replace(marker, "\n\n".join(parts))
