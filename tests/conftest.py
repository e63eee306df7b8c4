import json
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


@pytest.fixture
def rendered(tmp_path):
    """Synthetic results for the tiny plan over 3 seeds with two runs missing, rendered."""
    from synthetic import SEEDS, write_fake_run
    from thadcr.experiments.plan import plan, runs_dir
    from thadcr.experiments.tables import render

    runs = plan("tiny", **SEEDS)
    missing = {"audiocaps-THA-htsat-K8-a0.01-b0.005-s2", "audiocaps-DCR-htsat-K10-a0.01-b0.005-s0"}
    for i, run in enumerate(runs):
        if run.run_id not in missing:
            write_fake_run(runs_dir(tmp_path, "tiny"), run, wall=100.0 + i)
    executions = tmp_path / "tiny" / "executions"
    executions.mkdir(parents=True)
    for i, elapsed in enumerate((1234.5, 10.0)):
        (executions / f"x{i}.json").write_text(json.dumps({"elapsed_s": elapsed, "shard": "0/1", "jobs": 1}))
    summary = render("tiny", tmp_path, **SEEDS)
    return tmp_path, runs, missing, summary
