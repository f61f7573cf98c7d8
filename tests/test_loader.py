"""Loading checkpoints: sharded == single, and a clear error for each bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import dgemma
from dgemma.model import CheckpointError


@pytest.fixture
def ckpt_copy(checkpoint, tmp_path):
    src, _ = checkpoint
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def _logits(m) -> torch.Tensor:
    ids = torch.arange(5, 17)[None]
    return m.decoder_logits(ids, torch.arange(8)[None] + 20)


def test_sharded_checkpoint_loads_identically(model, ckpt_copy):
    tensors = load_file(ckpt_copy / "model.safetensors")
    names = sorted(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in shard}, ckpt_copy / fname)
        weight_map.update({n: fname for n in shard})
    (ckpt_copy / "model.safetensors").unlink()
    (ckpt_copy / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    assert torch.equal(_logits(dgemma.load(ckpt_copy)), _logits(model))


def test_weights_are_memory_mapped_not_copied(checkpoint):
    m = dgemma.load(checkpoint[0], dtype="float32")
    w = m.model.layers[0].experts.gate_up_proj
    # a float32 tensor from the mmap'd file is used in place: its storage is the file mapping, not a fresh copy
    assert not w.untyped_storage().resizable()


def test_bfloat16_matches_reference_in_bfloat16(checkpoint, model):
    """bfloat16 against the reference in bfloat16 and float32.

    A random tiny network amplifies rounding (the reference's own bfloat16 logits are ~20% off its
    float32 ones), so the check is relative: dgemma's bfloat16 must sit much closer to the reference's
    bfloat16 than bfloat16 sits to float32, and be no further from float32 than the reference is.
    """
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

    def reference(dtype):
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(checkpoint[0], dtype=dtype).eval()
        with torch.no_grad():
            cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
            ref.model.encoder(input_ids=torch.arange(5, 17)[None], past_key_values=cache)
            return ref(past_key_values=cache, decoder_input_ids=torch.arange(8)[None] + 20).logits

    m16 = dgemma.load(checkpoint[0], dtype="bfloat16")
    assert m16.model.dtype == torch.bfloat16
    mine, ref16, ref32 = _logits(m16), reference(torch.bfloat16), reference(torch.float32)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    print(f"bf16: dgemma vs reference {rel(mine, ref16):.2e}; reference bf16 vs fp32 {rel(ref16, ref32):.2e}")
    assert rel(mine, ref16) < 0.2 * rel(ref16, ref32)
    assert rel(mine, ref32) < 1.1 * rel(ref16, ref32)


def _expect(path, match: str):
    with pytest.raises(CheckpointError, match=match) as info:
        dgemma.load(path)
    assert "\n" not in str(info.value)


def test_missing_directory(tmp_path):
    _expect(tmp_path / "nope", "model directory not found")


def test_missing_config(ckpt_copy):
    (ckpt_copy / "config.json").unlink()
    _expect(ckpt_copy, "missing file: .*config.json")


def test_wrong_model_type(ckpt_copy):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["model_type"] = "llama"
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    _expect(ckpt_copy, "model_type 'llama'")


def test_missing_weights_and_pickle_refused(ckpt_copy):
    (ckpt_copy / "model.safetensors").unlink()
    (ckpt_copy / "pytorch_model.bin").write_bytes(b"not loaded")
    _expect(ckpt_copy, "pickle checkpoints are never loaded")


def test_missing_tensor_is_named(ckpt_copy):
    tensors = load_file(ckpt_copy / "model.safetensors")
    del tensors["model.decoder.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, ckpt_copy / "model.safetensors")
    _expect(ckpt_copy, r"missing tensor model\.decoder\.layers\.1\.self_attn\.k_proj\.weight")


def test_misshaped_tensor_is_named(ckpt_copy):
    tensors = load_file(ckpt_copy / "model.safetensors")
    tensors["model.decoder.layers.0.experts.down_proj"] = torch.zeros(4, 32, 15)
    save_file(tensors, ckpt_copy / "model.safetensors")
    _expect(
        ckpt_copy, r"model\.decoder\.layers\.0\.experts\.down_proj has shape \(4, 32, 15\).*\(4, 32, 16\)"
    )


def test_truncated_file(ckpt_copy):
    path = ckpt_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect(ckpt_copy, "not a readable safetensors file")


def test_corrupt_header(ckpt_copy):
    path = ckpt_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    _expect(ckpt_copy, "not a readable safetensors file")


def test_missing_shard(ckpt_copy):
    (ckpt_copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    _expect(ckpt_copy, "lists shard model-00001-of-00002.safetensors, which is missing")


def test_bad_dtype_names_the_field(checkpoint):
    with pytest.raises(ValueError, match="dtype"):
        dgemma.load(checkpoint[0], dtype="int8")


def _shard_index(ckpt, names: list[str]) -> None:
    tensors = load_file(ckpt / "model.safetensors")
    keys = sorted(tensors)
    weight_map = {k: names[i % len(names)] for i, k in enumerate(keys)}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize(
    "name", ["../x.safetensors", "/etc/passwd", "../../../../etc/passwd", "sub/../../x.safetensors", "C:\\x"]
)
def test_shard_names_outside_the_directory_are_refused(ckpt_copy, name):
    (ckpt_copy.parent / "x.safetensors").write_bytes((ckpt_copy / "model.safetensors").read_bytes())
    _shard_index(ckpt_copy, [name])
    (ckpt_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors.index.json lists"):
        dgemma.load(ckpt_copy)


def test_symlinks_leaving_the_directory_are_refused(ckpt_copy, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    (ckpt_copy / "model.safetensors").rename(outside)
    (ckpt_copy / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        dgemma.load(ckpt_copy)
    (ckpt_copy / "model.safetensors").unlink()
    (ckpt_copy / "weights").mkdir()
    outside.rename(ckpt_copy / "weights" / "w.safetensors")
    (ckpt_copy / "model.safetensors").symlink_to(ckpt_copy / "weights" / "w.safetensors")
    dgemma.load(ckpt_copy)  # a link that stays inside is fine
    (ckpt_copy / "tokenizer_config.json").unlink(missing_ok=True)
    (ckpt_copy / "tokenizer_config.json").symlink_to("/etc/hostname")
    with pytest.raises(CheckpointError, match="tokenizer_config.json"):
        dgemma.load(ckpt_copy)
