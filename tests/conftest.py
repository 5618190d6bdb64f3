import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import CONFIGS, NullTokenizer, build  # noqa: E402


@pytest.fixture(params=sorted(CONFIGS))
def family(request):
    return request.param


@pytest.fixture
def tiny(family):
    from interp import Model

    return Model(build(family), NullTokenizer(), name=f"tiny-{family}")
