"""Pure tensor functions of the diffusion sampler: temperature, acceptance, renoising, stopping.

No module here holds a model or any state of its own: state (the canvas, the argmax history, the
random generator) is passed in and returned, so the engine, the trainer and tests share one copy.
"""

from dgemma.sampling.entropy_bound import accept_mask, renoise, token_entropy
from dgemma.sampling.schedule import linear_temperature
from dgemma.sampling.step import StepOutput, denoise_step
from dgemma.sampling.stopping import is_confident, is_stable, push_history

__all__ = [
    "StepOutput",
    "accept_mask",
    "denoise_step",
    "is_confident",
    "is_stable",
    "linear_temperature",
    "push_history",
    "renoise",
    "token_entropy",
]
