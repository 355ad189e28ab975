"""samplernn_pase: an experiment manager for neural speech generation."""

__version__ = "0.1.0"

import os
import warnings

# MKL otherwise picks summation orders by memory alignment, so two runs of the
# same seeded training differ in the last bits; strict mode makes a resumed run
# repeat the uninterrupted one exactly. Must be set before torch loads MKL.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# pysptk imports pkg_resources (kept available by pinning setuptools<81); its
# deprecation warning says nothing the user can act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
