"""thadcr: Transformer-based Hierarchical Alignment and Disentangled Cross-modal Representation for audio-text retrieval."""

__version__ = "0.1.0"
