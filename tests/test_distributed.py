"""Data-parallel training: two processes (torchrun, gloo on the CPU) give the one-process run's
losses and weights, full fine-tuning and LoRA; per-example draws do not depend on the split."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dgemma.train.batch import Example, collate
from dgemma.train.distributed import World
from dgemma.train.objective import corrupt

LINES = [
    {"prompt": f"Count to {n}:", "response": " ".join(str(i) for i in range(1, n + 2))} for n in range(8)
]


def _train(checkpoint, tmp_path, name: str, nproc: int, *flags: str):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in LINES))
    out = tmp_path / name
    command = [sys.executable, "-m", "dgemma", "train", "--model", str(checkpoint[0]), "--data", str(data),
               "--out", str(out), "--steps", "3", "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "0",
               "--checkpoint-every", "3", "--nproc", str(nproc), *flags]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, load_file(out / "model" / "model.safetensors")


# Step 1 reads the same weights in every run, so its losses agree to float rounding. Later steps
# read weights updated from gradients summed in another order over differently shaped per-process
# batches; in full fine-tuning the difference grows through the next updates (likely through the
# router's top-k, a discrete choice that a near tie lets rounding flip). Measured on the 2026-12-02
# machine (lr 1e-2, 3 steps): losses 1e-3 relative at step 3, update gap 2.2%, spread over every
# tensor (no entry off by a whole Adam step); 1 process against 1 process: 0; LoRA (base weights
# frozen): 2.3e-5. The machine before measured under 1e-3 for both.
LATER_STEPS_REL = 3e-3
FULL_UPDATE_GAP = 5e-2


def _update_gap(base: dict, a: dict, b: dict) -> float:
    """||(a - base) - (b - base)|| / ||a - base||: how far two runs' weight updates differ."""
    gap = sum(((a[k] - b[k]).double() ** 2).sum() for k in a).sqrt()
    return float(gap / sum(((a[k] - base[k]).double() ** 2).sum() for k in a).sqrt())


@pytest.mark.slow  # torchrun launches: ~40 s on 2 cores
@pytest.mark.parametrize("flags", [(), ("--lora-rank", "2", "--grad-accum", "2")], ids=["full", "lora+accum"])
def test_two_processes_train_as_one(checkpoint, tmp_path, flags):
    """Same losses (relative 1e-5: the gradient sums differ in float summation order only) and the
    same weight updates (relative 1e-3: Adam turns the sign of a near-zero gradient's rounding into
    a whole step, on a few entries), where a different seed moves the weights elsewhere."""
    base = load_file(checkpoint[0] / "model.safetensors")
    one, weights_one = _train(checkpoint, tmp_path, "one", 1, *flags)
    two, weights_two = _train(checkpoint, tmp_path, "two", 2, *flags)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "diffusion_loss", "ar_loss"):
            rel = 1e-5 if a["step"] == 1 else LATER_STEPS_REL
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), (key, a, b)
    assert set(weights_one) == set(base) == set(weights_two)  # the vision tower exported as loaded
    gap = _update_gap(base, weights_one, weights_two)
    assert gap <= (1e-3 if flags else FULL_UPDATE_GAP)
    if not flags:  # the control: another seed's run is nowhere near
        _, other = _train(checkpoint, tmp_path, "other", 2, "--seed", "1")
        assert _update_gap(base, weights_one, other) > 10 * FULL_UPDATE_GAP


def test_an_examples_corruption_does_not_depend_on_its_batch():
    """The same example, alone or beside a longer one (which widens the batch), draws the same."""
    short, long = Example([2, 5], [7, 8, 9, 1]), Example([2], list(range(3, 20)) + [1])
    alone, together = collate([short], 8, 0), collate([long, short], 8, 0)

    def draws(batch, row):
        generators = [torch.Generator().manual_seed(100 + i) for i in range(batch.targets.shape[0])]
        generators[row] = torch.Generator().manual_seed(7)
        spans = (batch.supervised | batch.clean).sum(dim=1).tolist()
        noisy, t = corrupt(batch.targets, batch.supervised, 50, 0.3, generators, spans)
        return noisy[row, :8], t[row]

    (a, ta), (b, tb) = draws(alone, 0), draws(together, 1)
    assert torch.equal(a, b) and ta == tb


def test_a_world_shards_a_batch_by_example():
    items = list("abcdefgh")
    shares = [World(r, 3).shard(items) for r in range(3)]
    assert sorted(i for share in shares for i, _ in share) == list(range(8))
    assert [x for _, x in shares[1]] == ["b", "e", "h"]


@pytest.mark.slow  # three torchrun launches
def test_a_run_resumes_on_another_number_of_processes(checkpoint, tmp_path):
    """A two-process run stopped after step 2 (its step-3 checkpoint gone, as if killed), resumed
    by one process, ends as the one-process run that never stopped."""
    import shutil

    base = load_file(checkpoint[0] / "model.safetensors")
    straight, weights = _train(checkpoint, tmp_path, "straight", 1)
    _train(checkpoint, tmp_path, "resumed", 2, "--checkpoint-every", "1")
    checkpoints = tmp_path / "resumed" / "checkpoints"
    shutil.rmtree(checkpoints / "step-0000003")
    (checkpoints / "latest").write_text("step-0000002")
    resumed, resumed_weights = _train(checkpoint, tmp_path, "resumed", 1, "--checkpoint-every", "1")
    assert [m["step"] for m in resumed] == [1, 2, 3]
    for a, b in zip(straight, resumed, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5 if a["step"] == 1 else LATER_STEPS_REL)
    assert _update_gap(base, weights, resumed_weights) <= FULL_UPDATE_GAP
