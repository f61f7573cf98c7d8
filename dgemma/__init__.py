"""dgemma: DiffusionGemma block-diffusion generation in PyTorch.

import dgemma
m = dgemma.load("path/to/checkpoint")
out = m.generate("Why is the sky blue?", max_new_tokens=256, seed=0)
"""

from dgemma.api import GenerationOutput, Mode, Model, load
from dgemma.config import ModelConfig, SamplerConfig
from dgemma.config.files import CheckpointError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "GenerationOutput", "Mode", "Model", "ModelConfig", "SamplerConfig", "load"]
