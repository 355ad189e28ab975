"""samplernn_pase: an experiment manager for neural speech generation."""

__version__ = "0.1.0"
