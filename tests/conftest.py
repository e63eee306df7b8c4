import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))

# The tiny profile trains in portable numerics, which must be set up before torch computes
# anything in this process (thadcr.numerics): every in-process test runs with it.
from thadcr import numerics  # noqa: E402

numerics.apply("portable")


@pytest.fixture(scope="session")
def synthetic_clotho(tmp_path_factory):
    from synthetic import write_clotho

    return write_clotho(tmp_path_factory.mktemp("synthetic_clotho"))
