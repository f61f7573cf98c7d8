"""The Gemma 4 image processor (transformers 5.23.0's PIL backend), without torchvision.

Per image: composite any transparency onto white and convert to RGB; resize with PIL's bicubic
filter to the largest size that keeps the aspect ratio, fits `max_soft_tokens * k^2` patches and
has sides divisible by `k * patch_size` (k = pooling kernel); scale to [0, 1]; cut into
patch_size x patch_size patches, row by row, each flattened as (row, column, channel); pad the
patch list to the budget with zero patches at position (-1, -1). Each k x k block of patches
becomes one soft token, so an image fills `patches / k^2` image-token positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dgemma.config.files import CheckpointError, inside, read_json
from dgemma.config.vision import VisionConfig
from dgemma.engine.request import ImageInput

SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)  # the processor's supported `max_soft_tokens`


def target_size(height: int, width: int, patch: int, max_patches: int, k: int) -> tuple[int, int]:
    """(height, width) after the aspect-preserving resize (the reference's rule, its edge cases too)."""
    target_px = max_patches * patch**2
    factor = math.sqrt(target_px / (height * width))
    side = k * patch
    h = int(math.floor(factor * height / side)) * side
    w = int(math.floor(factor * width / side)) * side
    longest = (max_patches // k**2) * side
    if h == 0 and w == 0:
        raise ValueError(f"an image of {width}x{height} resizes to nothing")
    if h == 0:  # very wide: one block high
        h, w = side, min(int(math.floor(width / height)) * side, longest)
    elif w == 0:  # very tall
        w, h = side, min(int(math.floor(height / width)) * side, longest)
    if h * w > target_px:
        raise ValueError(f"an image of {width}x{height} does not fit {max_patches} patches")
    return h, w


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited onto a white background."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageProcessor:
    patch_size: int = 16
    pooling_kernel_size: int = 3
    max_soft_tokens: int = 280

    def __post_init__(self) -> None:
        if self.max_soft_tokens not in SOFT_TOKEN_BUDGETS:
            raise ValueError(
                f"`max_soft_tokens` must be one of {', '.join(map(str, SOFT_TOKEN_BUDGETS))}, got {self.max_soft_tokens!r}"
            )

    @classmethod
    def for_model(cls, vision: VisionConfig, max_soft_tokens: int | None = None) -> ImageProcessor:
        budget = vision.soft_tokens_per_image if max_soft_tokens is None else max_soft_tokens
        return cls(vision.patch_size, vision.pooling_kernel_size, budget)

    @property
    def max_patches(self) -> int:
        return self.max_soft_tokens * self.pooling_kernel_size**2

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The resized image as float32 (3, H, W) in [0, 1]."""
        rgb = to_rgb(image)
        h, w = target_size(rgb.height, rgb.width, self.patch_size, self.max_patches, self.pooling_kernel_size)
        if (h, w) != (rgb.height, rgb.width):
            rgb = rgb.resize((w, h), resample=Image.Resampling.BICUBIC)
        array = np.asarray(rgb).transpose(2, 0, 1)
        return (array.astype(np.float64) * (1 / 255)).astype(np.float32)

    def __call__(self, image: Image.Image) -> ImageInput:
        pixels = self.pixels(image)
        p = self.patch_size
        _, H, W = pixels.shape
        rows, cols = H // p, W // p
        patches = pixels.reshape(3, rows, p, cols, p).transpose(1, 3, 2, 4, 0).reshape(rows * cols, -1)
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows), indexing="xy")
        positions = np.stack([xs, ys], axis=-1).reshape(rows * cols, 2)
        padded = np.zeros((self.max_patches, patches.shape[1]), dtype=np.float32)
        padded[: len(patches)] = patches
        where = np.full((self.max_patches, 2), -1, dtype=np.int64)
        where[: len(patches)] = positions
        return ImageInput(
            torch.from_numpy(padded),
            torch.from_numpy(where),
            len(patches) // self.pooling_kernel_size**2,
        )


def image_processor_for(directory: Path, vision: VisionConfig) -> ImageProcessor:
    """The checkpoint's image processor: its processor_config.json or preprocessor_config.json
    settings where it has them, else the vision config's."""
    settings: dict = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        raw = read_json(inside(directory, name), required=False) or {}
        settings = raw.get("image_processor", raw) if isinstance(raw, dict) else {}
        if settings:
            break
    try:
        return ImageProcessor(
            int(settings.get("patch_size", vision.patch_size)),
            int(settings.get("pooling_kernel_size", vision.pooling_kernel_size)),
            int(settings.get("max_soft_tokens", vision.soft_tokens_per_image)),
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory}: image processor settings: {err}") from None
