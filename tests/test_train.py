"""The trainer: the loss falls from scratch, and a stopped or killed run resumes to the identical state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
