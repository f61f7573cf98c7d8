"""dgemma: DiffusionGemma block-diffusion generation in PyTorch.

import dgemma
m = dgemma.load("path/to/checkpoint")
out = m.generate("Why is the sky blue?", max_new_tokens=256, seed=0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# Public names, imported on first use: `import dgemma` (and the command line's parser) stay free of
# torch until a model is actually loaded.
_EXPORTS = {
    "CheckpointError": "dgemma.config.files",
    "GenerationOutput": "dgemma.api",
    "Mode": "dgemma.api",
    "Model": "dgemma.api",
    "ModelConfig": "dgemma.config",
    "SamplerConfig": "dgemma.config",
    "load": "dgemma.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dgemma' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]
