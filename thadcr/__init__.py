"""thadcr: Transformer-based Hierarchical Alignment and Disentangled Cross-modal Representation for
audio-text retrieval.

The package in layers; imports point one way, from the top of this list down:

- `interfaces`: the `thadcr` command line, text-to-audio search, the notebook helpers.
- `experiments`: the plan of runs behind Tables 1-5, its execution and rendering, the claims,
  the power analysis, the pretraining of the tiny encoders.
- `run`: training, evaluation and metrics, feature caches, checkpoints, distributed training,
  provenance, the numerics trace.
- `model` (the paper's section 2, only the method) and `data` (readers, data check, caches, torch
  datasets, the embedded builder); neither imports the other.
- basics: `config` (profiles and the table of variants), `errors`, `files` (atomic writes,
  hashing), `numerics` and `portable` (the same bits on every x86-64 CPU).
"""

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it (dynamic)
