"""pyproject.toml and environment.yml list the same packages with the same pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {r.replace(" ", "") for r in reqs}


def _conda_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_environment_yml_matches_pyproject():
    py, conda = _pyproject_requirements(), _conda_requirements()
    assert py == conda, f"only in pyproject: {sorted(py - conda)}; only in environment.yml: {sorted(conda - py)}"


def test_required_pins_present():
    reqs = _pyproject_requirements()
    assert "torchaudio==2.11.0" in reqs
    # the committed bits depend on the text encoder's and the builder's code too (README, portable numerics)
    assert "transformers==5.25.0" in reqs and "numpy==2.4.6" in reqs
    assert any(r.startswith("jupyter-book") and "<2" in r for r in reqs)
