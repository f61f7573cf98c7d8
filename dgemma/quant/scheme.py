"""What to quantize and how: `QuantScheme.parse("int8" | "int4", group_size, keep=...)`.

By default the routed experts (most of the weights), the attention projections and the shared
dense MLP are quantized; the token embedding (also the tied output head), the router, the norms and
the self-conditioning block stay at load precision (the MLX port found 4-bit embeddings and routers
hurt quality). `keep` names components to leave unquantized.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("experts", "attention", "mlp")
SCHEMES = {"int8": 8, "int4": 4}
DEFAULT_GROUP_SIZE = 32
QUANT_METHOD = "dgemma"  # config.json's quantization_config.quant_method for checkpoints we write


@dataclass(frozen=True)
class QuantScheme:
    bits: int
    group_size: int = DEFAULT_GROUP_SIZE  # int4 only: inputs sharing one scale
    components: tuple[str, ...] = COMPONENTS

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
        if not isinstance(components, list) or not set(components) <= set(COMPONENTS):
            raise ValueError(f"`quantization_config.components` must be a subset of {list(COMPONENTS)}")
        bits = {8: "int8", 4: "int4"}.get(raw.get("bits"))
        if bits is None:
            raise ValueError(f"`quantization_config.bits` must be 8 or 4, got {raw.get('bits')!r}")
        keep = tuple(c for c in COMPONENTS if c not in components)
        return cls.parse(bits, raw.get("group_size", DEFAULT_GROUP_SIZE), keep)

    @classmethod
    def parse(
        cls, scheme: str | QuantScheme | None, group_size: int | None = None, keep: tuple[str, ...] = ()
    ) -> QuantScheme | None:
        """A scheme from its name (None: full precision); ValueError naming the bad argument."""
        if scheme is None or isinstance(scheme, QuantScheme):
            return scheme
        if scheme not in SCHEMES:
            raise ValueError(f"`quantize` must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        group = DEFAULT_GROUP_SIZE if group_size is None else group_size
        if isinstance(group, bool) or not isinstance(group, int) or group < 2 or group % 2:
            raise ValueError(f"`group_size` must be an even integer >= 2, got {group_size!r}")
        unknown = sorted(set(keep) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"`keep` names unknown component {unknown[0]!r}; known: {', '.join(COMPONENTS)}")
        return cls(SCHEMES[scheme], group, tuple(c for c in COMPONENTS if c not in keep))
