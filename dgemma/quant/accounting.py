"""What a model takes in memory, per component, as it would be loaded: parameter counts, weight
bytes at the load dtype or quantized, and KV-cache bytes per token. Built on the meta device, so
the full 26B-A4B shape is accounted for without a single weight."""

from __future__ import annotations

from typing import Any

import torch

from dgemma.config import ModelConfig
from dgemma.engine.cache import KVCache
from dgemma.model.transformer import DiffusionGemma
from dgemma.quant.apply import prepare
from dgemma.quant.scheme import QuantScheme

COMPONENTS = ("embedding", "experts", "attention", "mlp", "router", "self_conditioning", "norms", "vision")


def component(name: str) -> str:
    if name.startswith(("vision_tower.", "embed_vision.")):
        return "vision"
    if name.startswith("embed_tokens"):
        return "embedding"
    if name.startswith("self_conditioning"):
        return "self_conditioning"
    for part, label in ((".experts.", "experts"), (".router.", "router"), (".mlp.", "mlp")):
        if part in name:
            return label
    if ".self_attn." in name and "_norm" not in name:
        return "attention"
    return "norms"


def memory_report(
    config: ModelConfig, scheme: QuantScheme | None, dtype: torch.dtype, vision: bool = False
) -> dict[str, Any]:
    """{components: {name: {params, bytes}}, total_params, active_params, weight_bytes,
    kv_bytes_per_token}: bytes as `dgemma.load` would hold them (float weights at `dtype`,
    quantized data and their scales as stored); `vision`: the vision tower is loaded too
    (it stays at `dtype`)."""
    with torch.device("meta"):
        model = DiffusionGemma(config)
        if vision and config.vision is not None:
            model.attach_vision()
        counts = {c: 0 for c in COMPONENTS}
        for name, p in model.named_parameters():
            counts[component(name)] += p.numel()
        if scheme is not None:
            prepare(model, scheme)
        sizes = {c: 0 for c in COMPONENTS}
        quantized = {n for n, _ in model.named_buffers() if n.endswith(("qweight", "scale"))}
        for name, t in model.state_dict(keep_vars=True).items():  # what loading assigns
            if name in quantized or not t.is_floating_point():
                sizes[component(name)] += t.numel() * t.element_size()
            else:
                sizes[component(name)] += t.numel() * dtype.itemsize
        cache = KVCache(config, 1, 1, dtype, torch.device("meta"))
    expert_params = counts["experts"]
    # per token: the text model with its routed share of the experts (the tower runs once per image)
    text = sum(counts.values()) - counts["vision"]
    active = text - expert_params + expert_params * config.top_k_experts // config.num_experts
    return {
        "scheme": "full precision" if scheme is None else str(scheme),
        "dtype": str(dtype).removeprefix("torch."),
        "components": {c: {"params": counts[c], "bytes": sizes[c]} for c in COMPONENTS},
        "total_params": sum(counts.values()),
        "active_params": active,
        "weight_bytes": sum(sizes.values()),
        "kv_bytes_per_token": cache.nbytes(),
    }


def gguf_report(path, config: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """`memory_report` for a GGUF file as `dgemma.load` holds it: the layers that compute with
    packed weights keep the file's bytes; the embedding, router and norms are unpacked to `dtype`."""
    from gguf import GGUFReader

    from dgemma.quant import ggml
    from dgemma.quant.gguf_file import our_name

    report = memory_report(config, None, dtype)
    counts = {c: 0 for c in COMPONENTS}
    sizes = {c: 0 for c in COMPONENTS}
    types: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        name = our_name(t.name)
        if name is None:
            continue
        part, n = component(name), int(t.n_elements)
        counts[part] += n
        packed = int(t.tensor_type) not in (0, 1, 30) and part in (
            "experts",
            "attention",
            "mlp",
            "self_conditioning",
        )
        sizes[part] += int(t.n_bytes) if packed else n * dtype.itemsize
        kind = ggml.type_name(int(t.tensor_type))
        types[kind] = types.get(kind, 0) + 1
    sizes["norms"] += config.num_hidden_layers * dtype.itemsize  # the encoder's layer scalars
    report.update(
        scheme="GGUF " + ", ".join(f"{k} x{v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])),
        components={c: {"params": counts[c], "bytes": sizes[c]} for c in COMPONENTS},
        total_params=sum(counts.values()),
        weight_bytes=sum(sizes.values()),
    )
    return report
