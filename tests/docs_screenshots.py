"""Take the site's screenshots in headless Chromium: the home page, one API page and one tutorial
page with a plotly figure (``docs/screenshots/site-*.png``).

    mkdocs build --strict && python tests/docs_screenshots.py [--site build/site]

The pages are opened from the built folder (``file://``: plotly.js is served by the site itself,
so nothing is fetched from the network).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {  # picture -> (page, window height)
    "site-home.png": ("index.html", 1100),
    "site-api.png": ("api/heads/index.html", 1100),
    "site-tutorial.png": ("tutorials/02_attention_heads/index.html", 2500),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=ROOT / "build" / "site")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no headless Chromium found (apt-get install chromium)")
    for picture, (page, height) in PAGES.items():
        url = (args.site / page.split("#")[0]).resolve().as_uri() + ("#" + page.split("#")[1] if "#" in page else "")
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={profile}", f"--window-size=1280,{height}", "--virtual-time-budget=15000",
                            f"--screenshot={args.out / picture}", url], check=True, capture_output=True, timeout=180)
        print(args.out / picture)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
