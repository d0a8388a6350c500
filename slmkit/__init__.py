"""slmkit: turn a large language model into a small, fast one.

Distill, prune, quantize, export and benchmark, driven by YAML recipes; every step leaves a
versioned, self-describing artifact (see docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"
