"""The quantized checkpoints people download, read packed: GGUF (llama.cpp's block types) and
compressed-tensors FP8 / NVFP4. Each file is written here with the tools' own packages and loads
with the logits of its dequantized weights; bad files are clear errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

import dgemma
from dgemma.config.files import CheckpointError
from dgemma.quant import ggml
from dgemma.quant.accounting import gguf_report
from dgemma.quant.packed import PackedExperts, PackedLinear
from tests.checkpoint import make_checkpoint
from tests.cli import run
from tests.quant_files import random_blocks, write_compressed, write_gguf

gguf = pytest.importorskip("gguf")
IDS = [[2, 17, 99, 45, 3, 8]]
CANVAS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = tmp_path_factory.mktemp("float")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # well-conditioned weights (std 0.05, as conftest's `conditioned`): generated tokens are compared,
    # and at the default std rounding differences grow through many self-conditioned steps
    make_checkpoint(directory, seed=5, std=0.05)
    return directory


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A checkpoint whose rows are whole K-quant super-blocks (256 inputs)."""
    directory = tmp_path_factory.mktemp("wide")
    make_checkpoint(
        directory, seed=6, std=0.05, hidden_size=256, intermediate_size=256, moe_intermediate_size=256
    )
    return directory


def assert_same_model(packed_dir, float_dir):
    packed, plain = dgemma.load(packed_dir), dgemma.load(float_dir)
    torch.testing.assert_close(packed.encoder_logits(IDS), plain.encoder_logits(IDS), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        packed.decoder_logits(IDS, CANVAS), plain.decoder_logits(IDS, CANVAS), rtol=1e-5, atol=1e-5
    )
    a, b = (m.generate("hi", max_new_tokens=8, seed=0).token_ids for m in (packed, plain))
    assert a == b
    return packed, plain


@pytest.mark.parametrize("qtype", sorted(ggml.DECODERS) + [11])  # 11: Q3_K, through the gguf package
def test_every_block_decoder_matches_the_gguf_package(qtype):
    rng = np.random.default_rng(qtype)
    if qtype in ggml.TYPES:
        blocks = random_blocks(qtype, 6, 512, rng)
    else:
        blocks = rng.integers(0, 256, (6, 2 * 110), dtype=np.uint8)
        blocks.reshape(-1, 110)[:, 108:110] = np.full((12, 1), 0.01, np.float16).view(np.uint8)
    expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(qtype))
    ours = ggml.dequantize(torch.from_numpy(blocks), qtype, 512, torch.float32)
    assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(expected)))


def _by_row(row_type, fallback):
    return lambda name, shape: row_type if shape[-1] % 256 == 0 else fallback if shape[-1] % 32 == 0 else None


@pytest.mark.parametrize(
    "label,pick",
    [
        ("Q8_0", _by_row(8, 8)),
        ("Q4_0", _by_row(2, 2)),
        ("Q5_0", _by_row(6, 6)),
        ("Q4_1/Q5_1", _by_row(3, 7)),
    ],
)
def test_a_gguf_file_computes_with_its_dequantized_weights(source, tmp_path, label, pick):
    gguf_dir, float_dir = write_gguf(source, tmp_path, pick)
    packed, _ = assert_same_model(gguf_dir, float_dir)
    assert isinstance(packed.model.layers[0].self_attn.q_proj, PackedLinear)
    assert isinstance(packed.model.layers[0].experts, PackedExperts)


def test_a_k_quant_mix_like_q4_k_m(wide, tmp_path):
    """Q4_K for most matrices, Q6_K for the embedding and the expert down projections, Q5_K for
    the dense MLP, Q8_0 where rows are not whole super-blocks (llama.cpp's own fallback)."""

    def pick(name, shape):
        if shape[-1] % 256:
            return 8 if shape[-1] % 32 == 0 else None
        if name.startswith("embed_tokens") or name.endswith("experts.down_proj"):
            return 14
        return 13 if ".mlp." in name else 12

    gguf_dir, float_dir = write_gguf(wide, tmp_path, pick)
    packed, plain = assert_same_model(gguf_dir, float_dir)
    held = sum(t.nbytes for t in packed.model.state_dict().values())
    assert held < 0.45 * sum(t.nbytes for t in plain.model.state_dict().values())
    path = next(gguf_dir.glob("*.gguf"))
    assert gguf_report(path, packed.config, torch.float32)["weight_bytes"] == held  # inspect's accounting
    out = run("inspect", "--model", str(path), "--dtype", "float32", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["weight_bytes"] == held, out.stderr
    assert "Q4_K" in json.loads(out.stdout)["scheme"]
    # a .gguf file path works too: its config, tokenizer and template are beside it
    by_file = dgemma.load(path)
    torch.testing.assert_close(by_file.encoder_logits(IDS), packed.encoder_logits(IDS))


@pytest.mark.parametrize("scheme", ["fp8", "nvfp4"])
def test_compressed_tensors_checkpoints_compute_with_their_dequantized_weights(source, tmp_path, scheme):
    """Written with compressed-tensors' own compressors, experts one by one as llm-compressor does."""
    pytest.importorskip("compressed_tensors")
    quant_dir, float_dir = write_compressed(source, tmp_path, scheme)
    packed, plain = assert_same_model(quant_dir, float_dir)
    assert isinstance(packed.model.layers[1].self_attn.o_proj, PackedLinear)
    assert isinstance(packed.model.layers[1].experts, PackedExperts)
    held = sum(t.nbytes for t in packed.model.state_dict().values())
    assert held < sum(t.nbytes for t in plain.model.state_dict().values())


def test_cli_generates_from_a_gguf_file(source, tmp_path):
    gguf_dir, _ = write_gguf(source, tmp_path, _by_row(8, 8))
    out = run(
        "generate",
        "--model",
        str(next(gguf_dir.glob("*.gguf"))),
        "hi",
        "--max-new-tokens",
        "8",
        "--seed",
        "0",
    )
    assert out.returncode == 0, out.stderr
    bad = run("generate", "--model", str(gguf_dir), "hi", "--quantize", "int8")
    assert bad.returncode != 0 and "without `quantize`" in bad.stderr
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "hi", "completion": "there"}\n')
    train = run(
        "train", "--model", str(gguf_dir), "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1"
    )
    assert train.returncode == 2 and "holds quantized weights" in train.stderr, train.stderr


def test_bad_gguf_files_are_clear_errors(source, tmp_path):
    gguf_dir, _ = write_gguf(source, tmp_path / "a", _by_row(8, 8))
    path = next(gguf_dir.glob("*.gguf"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        dgemma.load(path)
    path.write_bytes(data)
    shutil.copy(path, gguf_dir / "other.gguf")
    with pytest.raises(CheckpointError, match="several GGUF files"):
        dgemma.load(gguf_dir)
    wrong_dir, _ = write_gguf(source, tmp_path / "b", _by_row(8, 8), block_count=7)
    with pytest.raises(CheckpointError, match="block_count is 7"):
        dgemma.load(wrong_dir)
    llama_dir, _ = write_gguf(source, tmp_path / "c", _by_row(8, 8), arch="llama")
    with pytest.raises(CheckpointError, match="not DiffusionGemma"):
        dgemma.load(llama_dir)


def test_unsupported_compressed_tensors_formats_are_clear_errors(source, tmp_path):
    pytest.importorskip("compressed_tensors")
    quant_dir, _ = write_compressed(source, tmp_path, "fp8")
    config = json.loads((quant_dir / "config.json").read_text())
    config["quantization_config"]["format"] = "pack-quantized"
    (quant_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'pack-quantized' is not read"):
        dgemma.load(quant_dir)
    with pytest.raises(CheckpointError, match="without `quantize`"):
        config["quantization_config"]["format"] = "float-quantized"
        (quant_dir / "config.json").write_text(json.dumps(config))
        dgemma.load(quant_dir, quantize="int4")
