"""The GPU check runs end to end: `--smoke` takes every code path on the CPU at toy sizes, so that a
lent GPU's few minutes are not spent finding a bug in the script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["training"]) == {"DP", "THA", "THA+DCR"}
    assert all(r["step_s"] > 0 and r["n_parameters"] > 0 for r in figures["training"].values())
    assert figures["loader"]["from_audio_clips_per_s"] > 0 and figures["loader"]["from_cache_clips_per_s"] > 0
    assert figures["tha_scoring"]["clips"] == 40 and figures["tha_scoring"]["seconds"] > 0
    assert "THA scoring 40 x 200" in done.stdout and figures["skipped"] == []
