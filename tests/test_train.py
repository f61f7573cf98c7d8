"""The trainer: the loss falls from scratch, and a stopped or killed run resumes to the identical state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dgemma.config import ModelConfig
from dgemma.model.init import init_model
from dgemma.train.batch import Example
from dgemma.train.trainer import TrainConfig, train

TINY = {
    "model_type": "diffusion_gemma",
    "canvas_length": 8,
    "text_config": dict(
        vocab_size=24,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        global_head_dim=16,
        num_global_key_value_heads=1,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=16,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    ),
}


class ReverseDigits:
    """Prompt: 6 random symbols; response: the same reversed, then EOS. Learnable in a few hundred steps."""

    def examples(self, index: int, count: int) -> list[Example]:
        g = torch.Generator().manual_seed(index)
        seqs = torch.randint(3, 24, (count, 6), generator=g).tolist()
        return [Example([2, *s], [*reversed(s), 1]) for s in seqs]


def _config(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, checkpoint_every=4, log_every=2, seed=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow  # over 10 s on the 2-core machine; CI runs it (./scripts/test --all)
def test_loss_falls_from_scratch(tmp_path):
    model = init_model(ModelConfig.from_hf(TINY), seed=0)
    result = train(
        model,
        ReverseDigits(),
        _config(steps=400, lr=5e-3, log_every=20, checkpoint_every=400),
        tmp_path,
        pad_id=0,
    )
    first, last = result.metrics[0], result.metrics[-1]
    print(
        f"loss {first['loss']:.3f} -> {last['loss']:.3f}; diffusion {first['diffusion_loss']:.3f} -> {last['diffusion_loss']:.3f}"
    )
    assert last["diffusion_loss"] < 0.6 * first["diffusion_loss"]
    assert last["ar_loss"] < 0.6 * first["ar_loss"]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == len(result.metrics)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_stopped_run_resumes_to_identical_state(tmp_path):
    full = init_model(ModelConfig.from_hf(TINY), seed=3)
    train(full, ReverseDigits(), _config(), tmp_path / "full", pad_id=0)

    parted = init_model(ModelConfig.from_hf(TINY), seed=3)
    train(
        parted, ReverseDigits(), _config(), tmp_path / "parted", pad_id=0, stop_after=5
    )  # checkpoint at 4, 5
    again = init_model(ModelConfig.from_hf(TINY), seed=3)  # a new process would start from scratch weights
    result = train(again, ReverseDigits(), _config(), tmp_path / "parted", pad_id=0)
    assert result.step == 12
    a, b = _weights(full), _weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from dgemma.config import ModelConfig
    from dgemma.model.init import init_model
    from dgemma.train.trainer import train
    from tests.test_train import TINY, ReverseDigits, _config
    slow = ReverseDigits()
    class Slow:
        def examples(self, index, count):
            time.sleep(float(sys.argv[2]))
            return slow.examples(index, count)
    model = init_model(ModelConfig.from_hf(TINY), seed=3)
    train(model, Slow(), _config(steps=20, checkpoint_every=3), Path(sys.argv[1]), pad_id=0)
    """
)


@pytest.mark.slow  # over 10 s on the 2-core machine; CI runs it (./scripts/test --all)
def test_sigkilled_run_resumes_to_identical_state(tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=root))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.15"], start_new_session=True)
    deadline = time.time() + 120
    while (
        not (out / "checkpoints" / "latest").exists()
        or "0000006" not in (out / "checkpoints" / "latest").read_text()
    ):
        assert time.time() < deadline and proc.poll() is None, "the training run did not reach step 6"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-checkpoint
    proc.wait()
    subprocess.run([sys.executable, str(script), str(out), "0"], check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "clean"), "0"], check=True, timeout=300)
    from safetensors.torch import load_file

    a = load_file(out / "checkpoints" / "step-0000020" / "model.safetensors")
    b = load_file(tmp_path / "clean" / "checkpoints" / "step-0000020" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_loads_in_transformers_and_dgemma_with_equal_logits(tmp_path):
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

    import dgemma
    from dgemma.config import SamplerConfig
    from dgemma.train.export import export

    model = init_model(ModelConfig.from_hf(TINY), seed=4)
    train(model, ReverseDigits(), _config(steps=6), tmp_path / "run", pad_id=0)
    with torch.no_grad():  # distinct encoder and decoder scalars, so both sets must round-trip
        model.encoder_layer_scalar.copy_(torch.tensor([0.9, 1.2]))
    out = export(model, tmp_path / "export", SamplerConfig(max_denoising_steps=12))
    mine = dgemma.load(out)
    ref = DiffusionGemmaForBlockDiffusion.from_pretrained(out).eval()
    assert mine.sampler_defaults.max_denoising_steps == 12
    ids, canvas = torch.tensor([[2, 5, 6, 7, 8, 9, 10]]), torch.arange(8)[None] + 3
    with torch.no_grad():
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        enc = ref.model.encoder(input_ids=ids, past_key_values=cache)
        ref_enc = torch.tanh(ref.lm_head(enc.last_hidden_state).float() / 30) * 30
        ref_dec = ref(past_key_values=cache, decoder_input_ids=canvas).logits
    assert (mine.encoder_logits(ids) - ref_enc).abs().max() < 1e-4
    assert (mine.decoder_logits(ids, canvas) - ref_dec).abs().max() < 1e-4
    original = model.logits(model.decode(canvas, *_store_plan(model, ids)))
    assert torch.allclose(mine.decoder_logits(ids, canvas), original, atol=1e-5)


def _store_plan(model, ids):
    from dgemma.engine.cache import KVCache
    from dgemma.engine.passes import encode_rows
    from dgemma.model import decoder_plan

    kv = KVCache(model.config, 1, ids.shape[1] + 8, model.dtype, model.device)
    encode_rows(model, kv, [0], [ids[0].tolist()])
    return kv.store, decoder_plan(kv.lengths, 8, model.config.sliding_window, kv.capacity, None)


def test_lora_trains_adapters_only_and_merges_on_export(tmp_path):
    import dgemma
    from dgemma.config import SamplerConfig
    from dgemma.train.export import export

    model = init_model(ModelConfig.from_hf(TINY), seed=6)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(
        model,
        ReverseDigits(),
        _config(steps=40, lr=1e-2, lora_rank=4, log_every=10, checkpoint_every=40),
        tmp_path / "run",
        pad_id=0,
    )
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]
    trainable = [n for n, p in model.named_parameters() if ".A" in n or ".B" in n]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    state = model.state_dict()
    assert torch.equal(state["embed_tokens.weight"], base["embed_tokens.weight"])  # frozen base
    assert torch.equal(
        state["layers.0.self_attn.q_proj.parametrizations.weight.original"],
        base["layers.0.self_attn.q_proj.weight"],
    )
    adapted = model.layers[0].self_attn.q_proj.weight.detach().clone()
    assert not torch.equal(adapted, base["layers.0.self_attn.q_proj.weight"])
    out = export(model, tmp_path / "export", SamplerConfig())
    merged = dgemma.load(out).model
    assert torch.equal(merged.layers[0].self_attn.q_proj.weight, adapted)


def test_clean_positions_are_never_corrupted_and_carry_no_loss():
    from dgemma.train.batch import collate
    from dgemma.train.objective import corrupt

    ex = [Example([2, 5, 6], [7, 8, 9, 10, 11, 1], clean=(0, 2, 5)), Example([2, 5], [7, 8, 1])]
    batch = collate(ex, 8, 0)
    assert batch.clean[0, [0, 2, 5]].all() and not batch.supervised[0, [0, 2, 5]].any()
    assert batch.supervised[0, [1, 3, 4, 6, 7]].all() and not batch.clean[1].any()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        noisy, _ = corrupt(batch.targets, batch.supervised & ~batch.clean, 24, 0.999, [g, g])
        assert torch.equal(noisy[0, [0, 2, 5]], batch.targets[0, [0, 2, 5]])


def _run_to(out: Path, steps: int, **kw):
    """Train a run of 8 steps up to step `steps` (checkpoints every 2)."""
    model = init_model(ModelConfig.from_hf(TINY), seed=3)
    config = _config(steps=8, checkpoint_every=2)
    return model, train(model, ReverseDigits(), config, out, pad_id=0, stop_after=steps, **kw)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    """A truncated newest checkpoint (or a garbage state.json) is skipped with a notice naming the file;
    the run resumes from the one before it and ends where an undamaged run ends."""
    from dgemma.train import checkpoint

    clean, _ = _run_to(tmp_path / "clean", 8)
    for damage in ("truncate", "state"):
        out = tmp_path / damage
        _run_to(out, 6)
        ckpts = out / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == [
            "step-0000002",
            "step-0000004",
            "step-0000006",
        ]  # only the newest three are kept
        if damage == "truncate":
            f = ckpts / "step-0000006" / "model.safetensors"
            f.write_bytes(f.read_bytes()[:100])
        else:
            (ckpts / "step-0000006" / "state.json").write_text("{garbage")
        notices = []
        again, result = _run_to(out, 8, notice=notices.append)
        assert len(notices) == 1 and "step-0000006" in notices[0] and "step-0000004" in notices[0], notices
        assert ("model.safetensors" if damage == "truncate" else "state.json") in notices[0]
        assert result.step == 8
        a, b = _weights(clean), _weights(again)
        assert all(torch.equal(a[k], b[k]) for k in a)
    with_pointer = tmp_path / "pointer"
    _run_to(with_pointer, 4)
    (with_pointer / "checkpoints" / "latest").write_text("step-0000999")
    try:
        _run_to(with_pointer, 6)
    except checkpoint.CheckpointReadError as err:
        assert "latest" in str(err) and "step-0000999" in str(err)
    else:
        raise AssertionError("a bad pointer must not restart training from step 0")
    for step in ("step-0000002", "step-0000004"):  # nothing readable at all: a clear error
        (with_pointer / "checkpoints" / step / "optimizer.safetensors").write_bytes(b"\0" * 10)
    (with_pointer / "checkpoints" / "latest").write_text("step-0000004")
    try:
        _run_to(with_pointer, 6, notice=lambda _: None)
    except checkpoint.CheckpointReadError as err:
        assert "no readable checkpoint" in str(err) and "optimizer.safetensors" in str(err)
    else:
        raise AssertionError("unreadable checkpoints must be an error")
