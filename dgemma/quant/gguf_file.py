"""DiffusionGemma GGUF files (llama.cpp's format; what Unsloth's Q4_K_M / Q8_0 downloads are), read
with the `gguf` package and kept packed.

Tensor names are those llama.cpp's converter gives the Gemma 4 backbone (`blk.N.attn_q.weight`,
`blk.N.ffn_gate_up_exps.weight`, ...) plus DiffusionGemma's own: the self-conditioning MLP
(`self_cond_pre_norm`, `self_cond_gate`, `self_cond_up`, `self_cond_down`) and the encoder's layer
scalars (`blk.N.enc_layer_output_scale`). Values are the checkpoint's own (Gemma 4 norms are stored
unshifted); `rope_freqs` is derived from the config and skipped. A GGUF file carries weights
only as far as dgemma is concerned: the config, tokenizer and chat template come from the model's
config.json / tokenizer files beside it (the original repository's small files).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dgemma.config.files import CheckpointError
from dgemma.quant import ggml
from dgemma.quant.packed import Format, Packed

_GLOBAL = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "self_cond_pre_norm.weight": "self_conditioning.pre_norm.weight",
    "self_cond_gate.weight": "self_conditioning.gate_proj.weight",
    "self_cond_up.weight": "self_conditioning.up_proj.weight",
    "self_cond_down.weight": "self_conditioning.down_proj.weight",
}
_LAYER = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm_1.weight": "post_feedforward_layernorm_1.weight",
    "pre_ffw_norm_2.weight": "pre_feedforward_layernorm_2.weight",
    "post_ffw_norm_2.weight": "post_feedforward_layernorm_2.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate_inp.weight": "router.proj.weight",
    "ffn_gate_inp.scale": "router.scale",
    "ffn_down_exps.scale": "router.per_expert_scale",
    "ffn_gate_up_exps.weight": "experts.gate_up_proj",
    "ffn_down_exps.weight": "experts.down_proj",
    "layer_output_scale.weight": "layer_scalar",
    "layer_output_scale": "layer_scalar",
}
_SKIPPED = {"rope_freqs.weight", "output.weight"}  # derived from the config / the tied head
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
_ENCODER_SCALAR = ("enc_layer_output_scale.weight", "enc_layer_output_scale")


def our_name(name: str) -> str | None:
    """Our state-dict name of a GGUF weight (None: one without a plain counterpart)."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLOCK.match(name)
    return f"layers.{m.group(1)}.{_LAYER[m.group(2)]}" if m and m.group(2) in _LAYER else None


def gguf_file(path: Path) -> Path | None:
    """The GGUF file `path` names (a .gguf file, or a directory holding exactly one and no
    safetensors weights); None when the weights are not GGUF."""
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    if any(path.glob("*.safetensors")):
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:3])
        raise CheckpointError(
            f"{path} holds several GGUF files ({names}); pass the one to load as the model path"
        )
    if found and re.search(r"-\d{5}-of-\d{5}\.gguf$", found[0].name):
        raise CheckpointError(
            f"{found[0]} is one part of a split GGUF; join the parts with llama-gguf-split --merge"
        )
    return found[0] if found else None


def read_gguf(path: Path, num_layers: int) -> tuple[dict, dict[int, torch.Tensor], list[str], dict]:
    """(our-named tensors and `Packed` weights, encoder layer scalars, unexpected names, metadata)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except ImportError:
        raise CheckpointError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    except Exception as err:  # the reader raises ValueError / struct errors on a bad header or a short file
        raise CheckpointError(f"{path} is not a readable GGUF file: {err}") from None
    meta = {k: _value(f) for k, f in reader.fields.items() if not k.startswith("tokenizer.")}
    found: dict[str, torch.Tensor | Packed] = {}
    scalars: dict[int, torch.Tensor] = {}
    unexpected: list[str] = []
    split: dict[tuple[int, str], Packed | torch.Tensor] = {}
    for t in reader.tensors:
        try:
            value = _tensor(t)
        except ValueError as err:
            raise CheckpointError(f"{path}: tensor {t.name}: {err}") from None
        ours = our_name(t.name)
        if ours is not None:
            found[ours] = value
            continue
        m = _BLOCK.match(t.name)
        if m is None:
            if t.name not in _SKIPPED:
                unexpected.append(t.name)
            continue
        layer, rest = int(m.group(1)), m.group(2)
        if rest in _ENCODER_SCALAR:
            if layer < num_layers:
                scalars[layer] = _plain(value).reshape(1)
        elif rest in ("ffn_gate_exps.weight", "ffn_up_exps.weight"):  # older files: the bank in two
            split[(layer, rest)] = value
        else:
            unexpected.append(t.name)
    for (layer, rest), gate in list(split.items()):
        if rest == "ffn_gate_exps.weight":
            up = split.get((layer, "ffn_up_exps.weight"))
            if up is None:
                raise CheckpointError(f"{path}: blk.{layer}.ffn_gate_exps has no ffn_up_exps beside it")
            found[f"layers.{layer}.experts.gate_up_proj"] = _join_rows(gate, up, path, layer)
    for key in [k for k in found if k.endswith(".layer_scalar")]:
        found[key] = _plain(found[key]).reshape(1)
    return found, scalars, unexpected, meta


def _tensor(t) -> torch.Tensor | Packed:
    """A reader tensor as a float tensor (F32 / F16 / BF16) or a `Packed` of its GGML blocks."""
    qtype = int(t.tensor_type)
    shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))  # ne is innermost-first
    data = np.asarray(t.data)
    if qtype in ggml.FLOAT_TYPES:
        raw = torch.from_numpy(data.view(np.uint8).copy())
        return raw.view(ggml.FLOAT_TYPES[qtype]).reshape(shape)
    width = ggml.row_bytes(qtype, shape[-1])
    if data.dtype != np.uint8 or data.size != width * int(np.prod(shape[:-1])):
        raise ValueError(
            f"holds {data.size} bytes; {ggml.type_name(qtype)} of shape {shape} takes another size"
        )
    blocks = torch.from_numpy(data.reshape(*shape[:-1], width).copy())
    return Packed(Format("gguf", qtype), {"blocks": blocks}, torch.Size(shape))


def _plain(value) -> torch.Tensor:
    return value.unpack(torch.float32) if isinstance(value, Packed) else value.float()


def _join_rows(gate, up, path: Path, layer: int):
    if isinstance(gate, Packed) and isinstance(up, Packed) and gate.format == up.format:
        blocks = torch.cat((gate.tensors["blocks"], up.tensors["blocks"]), dim=-2)
        shape = torch.Size((*gate.shape[:-2], gate.shape[-2] + up.shape[-2], gate.shape[-1]))
        return Packed(gate.format, {"blocks": blocks}, shape)
    return torch.cat((_plain(gate), _plain(up)), dim=-2)


def _value(field):
    try:
        return field.contents()
    except Exception:  # a field this gguf version cannot render: keep going without it
        return None


def check_metadata(meta: dict, config, path: Path) -> None:
    """The file's own hyper-parameters, where it states them, must be the config's."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{path} has no general.architecture: not a model GGUF file")
    if "gemma" not in arch.replace("-", ""):
        raise CheckpointError(f"{path} holds a {arch!r} model, not DiffusionGemma")
    for key, ours in (
        ("block_count", config.num_hidden_layers),
        ("embedding_length", config.hidden_size),
        ("expert_count", config.num_experts),
        ("expert_used_count", config.top_k_experts),
    ):
        theirs = meta.get(f"{arch}.{key}")
        if theirs is not None and int(theirs) != ours:
            raise CheckpointError(f"{path}: {arch}.{key} is {theirs}, config.json says {ours}")
