"""gpudiag's version: a leaf every layer may import (the report records it; pyproject.toml reads it from here)."""

__version__ = "0.1.0"
