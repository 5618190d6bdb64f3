"""The repository's top-level folders must not break other packages when run from the repository root."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_imports_from_the_repository_root():
    # transformers probes for Hugging Face's `kernels` by importing it; from the root, our
    # kernels/ folder answers to that name and must not re-enter a half-imported transformers.
    code = "import transformers.activations, interp; from interp.kernels import attention_stats; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
