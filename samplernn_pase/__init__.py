"""samplernn_pase: an experiment manager for neural speech generation."""

__version__ = "0.1.0"

import warnings

# pysptk imports pkg_resources (kept available by pinning setuptools<81); its
# deprecation warning says nothing the user can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def __getattr__(name: str):
    """`from samplernn_pase import load`: the Python API (api.py), imported on first use, since
    the package root is the ground floor that every module imports (experiment/release.py
    reads the version here)."""
    if name == "load":
        from .api import load
        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
