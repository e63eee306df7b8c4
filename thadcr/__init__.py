"""thadcr: Transformer-based Hierarchical Alignment and Disentangled Cross-modal Representation for audio-text retrieval."""

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it (dynamic)
