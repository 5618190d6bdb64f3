import json
import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run under Triton's CPU interpreter (set before they are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import CONFIGS, NullTokenizer, build  # noqa: E402


def _strict_json(text: str):
    def reject(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(autouse=True)
def reports_are_strict_json(request):
    """Every JSON file interp writes during a test (those its ``.interp-manifest.json`` lists,
    under the test's ``tmp_path``) must parse as strict JSON: NaN and infinities are null."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if request.node.get_closest_marker("raw_files") or tmp is None or not Path(tmp).is_dir():
        return
    for manifest in Path(tmp).rglob(".interp-manifest.json"):
        for name in json.loads(manifest.read_text()).get("files", []):
            path = manifest.parent / name
            if path.suffix == ".json" and path.is_file():
                try:
                    _strict_json(path.read_text())
                except ValueError as exc:
                    pytest.fail(f"{path} is not strict JSON: {exc}")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CPU the threads' waiting
    makes them several times slower (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=sorted(CONFIGS))
def family(request):
    return request.param


@pytest.fixture
def tiny(family):
    from interp import Model

    return Model(build(family), NullTokenizer(), name=f"tiny-{family}")


def _load_or_skip(name: str):
    from interp.models.bundled import BUNDLED

    entry = BUNDLED[name]
    if not entry.installed():
        pytest.skip(f"{name} is not installed ({entry.install_command})")
    import interp

    return interp.load(name)


@pytest.fixture(scope="session")
def smollm2():
    return _load_or_skip("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    return _load_or_skip("gemma3-270m")


@pytest.fixture(scope="session", params=["smollm2", "gemma3"])
def real_model(request):
    return request.getfixturevalue(request.param)
