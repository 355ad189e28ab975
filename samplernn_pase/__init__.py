"""samplernn_pase: an experiment manager for neural speech generation."""

__version__ = "0.1.0"

import warnings

# pysptk imports pkg_resources (kept available by pinning setuptools<81); its
# deprecation warning says nothing the user can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
