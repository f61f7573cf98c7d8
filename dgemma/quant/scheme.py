"""What to quantize and how: `QuantScheme.parse("int8" | "int4", group_size, components)`.

By default the routed experts (most of the weights), the attention projections and the shared
dense MLP are quantized; the token embedding (also the tied output head), the router, the norms and
the self-conditioning block stay at load precision (the MLX port found 4-bit embeddings and routers
hurt quality), and so does the vision tower unless "vision" is named (as llama.cpp ships its
vision projector at 16 bits by default; no real weights here measure what 4 bits cost images).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

COMPONENTS = ("experts", "attention", "mlp")  # quantized by default
ALL_COMPONENTS = (*COMPONENTS, "vision")  # "vision": the vision tower's linear layers
SCHEMES = {"int8": 8, "int4": 4}
DEFAULT_GROUP_SIZE = 32
SCALE_DTYPES = ("float16", "float32")
QUANT_METHOD = "dgemma"  # config.json's quantization_config.quant_method for checkpoints we write


@dataclass(frozen=True)
class QuantScheme:
    bits: int
    group_size: int = DEFAULT_GROUP_SIZE  # int4 only: inputs sharing one scale
    components: tuple[str, ...] = COMPONENTS
    scale_dtype: str = "float16"  # checkpoints written before scales were float16 say float32

    @property
    def scale_torch_dtype(self):
        import torch

        return getattr(torch, self.scale_dtype)

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def __str__(self) -> str:
        return self.name if self.bits == 8 else f"{self.name}, group {self.group_size}"

    def to_config(self) -> dict:
        """config.json's `quantization_config` for a checkpoint written quantized."""
        return {
            "quant_method": QUANT_METHOD,
            "bits": self.bits,
            "group_size": self.group_size,
            "components": list(self.components),
            "scale_dtype": self.scale_dtype,
        }

    @classmethod
    def from_config(cls, raw: object) -> QuantScheme:
        """The scheme a checkpoint's `quantization_config` records; ValueError when it is not ours."""
        if not isinstance(raw, dict) or raw.get("quant_method") != QUANT_METHOD:
            method = raw.get("quant_method") if isinstance(raw, dict) else raw
            raise ValueError(
                f"`quantization_config` has quant_method {method!r}; dgemma reads {QUANT_METHOD!r} "
                "checkpoints (written by `dgemma quantize`)"
            )
        components = raw.get("components", list(COMPONENTS))
        if not isinstance(components, list) or not set(components) <= set(ALL_COMPONENTS):
            raise ValueError(f"`quantization_config.components` must be a subset of {list(ALL_COMPONENTS)}")
        bits = {8: "int8", 4: "int4"}.get(raw.get("bits"))
        if bits is None:
            raise ValueError(f"`quantization_config.bits` must be 8 or 4, got {raw.get('bits')!r}")
        scale_dtype = raw.get("scale_dtype", "float32")  # absent: written with float32 scales
        if scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"`quantization_config.scale_dtype` must be one of {', '.join(SCALE_DTYPES)}")
        scheme = cls.parse(bits, raw.get("group_size", DEFAULT_GROUP_SIZE), tuple(components))
        return replace(scheme, scale_dtype=scale_dtype)

    @classmethod
    def parse(
        cls,
        scheme: str | QuantScheme | None,
        group_size: int | None = None,
        components: tuple[str, ...] | list[str] | None = None,
    ) -> QuantScheme | None:
        """A scheme from its name (None: full precision) and the components to quantize (None:
        experts, attention and dense MLP); ValueError naming the bad argument."""
        if scheme is None or isinstance(scheme, QuantScheme):
            if scheme is None and components is not None:
                raise ValueError("`quantize_components` applies with `quantize`")
            return scheme
        if scheme not in SCHEMES:
            raise ValueError(f"`quantize` must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        group = DEFAULT_GROUP_SIZE if group_size is None else group_size
        if isinstance(group, bool) or not isinstance(group, int) or group < 2 or group % 2:
            raise ValueError(f"`group_size` must be an even integer >= 2, got {group_size!r}")
        chosen = COMPONENTS if components is None else tuple(components)
        unknown = sorted(set(chosen) - set(ALL_COMPONENTS))
        if isinstance(components, str) or unknown or not chosen:
            raise ValueError(
                f"`quantize_components` must name some of {', '.join(ALL_COMPONENTS)}, got {components!r}"
            )
        return cls(SCHEMES[scheme], group, tuple(c for c in ALL_COMPONENTS if c in chosen))
