"""Take the screenshots of the app guide (docs/guide/app.md) of every page: the real server, headless Chromium, real reports.

    python tests/test_app/screenshots.py --model smollm2-135m --reports case_studies/results \\
        --reports reports/smollm2-neurons --out docs/screenshots

Reports missing for a page (the knob and circuits until their case studies land) are replaced
by the sample reports of ``report_fixtures`` (made-up numbers, the schema's shape), written to a
temporary folder; the caption printed for each picture says which. A page whose text holds an
absolute path of this machine (the working folder, the home folder, a report folder) is not
saved: the pictures are committed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from browser import Chromium  # noqa: E402
from report_fixtures import write_circuits, write_knob  # noqa: E402
from servers import free_port, wait_healthy  # noqa: E402

from interp.app.report_files import find_reports  # noqa: E402

# file name, page URL, window height, steps: (JavaScript to run or "", what must be drawn before going on)
CLICK = "[...document.querySelectorAll('button')].find(b => b.innerText.includes('{}')).click()"
SCROLL = "[...document.querySelectorAll('h2, h3')].find(h => h.innerText.includes('{}')).scrollIntoView()"
SHOTS = [
    ("heads", "", 1300, [("", "document.querySelectorAll('.js-plotly-plot .heatmaplayer image').length >= 2")]),
    ("heads-attention", "", 1300, [("", "document.body.innerText.includes('attends most to')"),
                                   (SCROLL.format("Heads"), "true")]),
    ("neurons", "neurons?concept=coffee&clamp=-25", 2300, [("", "document.body.innerText.includes('Measure activations')"),
                                  (CLICK.format("Measure"), "document.body.innerText.includes(\"Cohen's d\")"),
                                  (CLICK.format("Generate"), "document.body.innerText.includes('p(concept) next')")]),
    ("knob", "knob", 1900, [("", "document.querySelectorAll('.js-plotly-plot').length >= 2"
                                 " && document.body.innerText.includes('Steered generation')")]),
    ("circuits", "circuits", 1500, [("", "document.querySelectorAll('.js-plotly-plot').length >= 4")]),
]


def absolute_paths(text: str, folders: list[Path]) -> list[str]:
    """Those of ``folders`` (and the working and home folders) whose absolute path appears in ``text``."""
    names = {str(p) for f in [*folders, Path.cwd(), Path.home()] for p in (f, f.resolve())}
    return sorted(n for n in names if len(Path(n).parts) > 1 and n in text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reports", type=Path, action="append", default=[])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="interp-shots-"))
    dirs = [d.resolve() for d in args.reports]
    kinds = {r.kind for r in find_reports(dirs)}
    samples = []
    if "knob" not in kinds:
        import interp

        d_model = interp.load(args.model).cfg.d_model
        write_knob(scratch / "sample-knob", d_model=d_model, model=args.model, layer=20, n_layers=30)
        samples.append("knob")
    if "circuits" not in kinds:
        write_circuits(scratch / "sample-circuits", model=args.model, n_layers=30, n_heads=9)
        samples.append("circuits")
    if samples:
        dirs.append(scratch)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", "import sys; from interp.cli import main; sys.exit(main())", "app", "--port", str(port),
           "--model", args.model, *(a for d in dirs for a in ("--reports", str(d)))]
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_healthy(url, server, timeout=90)
        for name, page, height, steps in SHOTS:
            with Chromium(f"{url}/{page}", 1400, height) as b:
                for action, ready in steps:
                    if action:
                        b.evaluate(action)
                        time.sleep(1)
                    b.wait_for(ready, 300)
                time.sleep(2)  # plotly's transitions
                leaks = absolute_paths(b.evaluate("document.body.innerText") or "", [*dirs, scratch])
                if leaks:
                    raise SystemExit(f"{name}: the page shows absolute paths {leaks}; not saving it")
                shot = b.screenshot(args.out / f"{name}.png")
            print(f"{shot}{'  (sample report)' if page in samples else ''}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
