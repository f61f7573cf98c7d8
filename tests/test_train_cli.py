"""`dgemma train` on JSONL data: fine-tunes a checkpoint, exports a loadable model, rejects bad data."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import dgemma
from tests.cli import one_line_error, run, run_subprocess

LINES = [
    {"prompt": "Why is the sky blue?", "response": "Blue light scatters most."},
    {"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a fox."},
            {"role": "assistant", "content": "The quick brown fox."},
        ]
    },
]


def _train(checkpoint, tmp_path, out_name: str, *flags: str, runner=run):
    """`dgemma train` on LINES into tmp_path/out_name; returns (process, run directory)."""
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in LINES) + "\n")
    out = tmp_path / out_name
    return runner("train", "--model", str(checkpoint[0]), "--data", str(data), "--out", str(out), *flags), out


def test_train_from_jsonl_exports_a_model(checkpoint, tmp_path):
    proc, out = _train(
        checkpoint,
        tmp_path,
        "run",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--checkpoint-every",
        "2",
        "--freeze-router",
        runner=run_subprocess,  # the command's smoke test through `python -m dgemma`
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "loss.png").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 4
    before = load_file(checkpoint[0] / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    name_q = "model.decoder.layers.0.self_attn.q_proj.weight"
    name_r = "model.decoder.layers.0.router.proj.weight"
    assert not torch.equal(before[name_q], after[name_q])  # trained
    assert torch.equal(before[name_r], after[name_r])  # frozen router
    m = dgemma.load(out / "model")
    assert m.codec is not None and m.generate("Why is the sky blue?", max_new_tokens=4).token_ids[0]


def test_bad_training_data(checkpoint, tmp_path):
    good = str(checkpoint[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    one_line_error(
        run("train", "--model", good, "--data", str(bad), "--out", str(tmp_path / "o")), "bad.jsonl:1"
    )
    bad.write_text("not json\n")
    one_line_error(
        run("train", "--model", good, "--data", str(bad), "--out", str(tmp_path / "o")), "not valid JSON"
    )
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    one_line_error(
        run("train", "--model", good, "--data", str(bad), "--out", str(tmp_path / "o")), "assistant"
    )
    one_line_error(
        run("train", "--model", good, "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")),
        "not found",
    )
    bad.write_text(json.dumps(LINES[0]) + "\n")
    one_line_error(
        run(
            "train",
            "--model",
            good,
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--lora-rank",
            "2",
            "--lora-targets",
            "qq",
        ),
        "unknown LoRA target",
    )


def test_lora_fine_tune_from_cli(checkpoint, tmp_path):
    proc, out = _train(
        checkpoint,
        tmp_path,
        "lora",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--lora-rank",
        "2",
        "--lora-targets",
        "q_proj,down_proj",
    )
    assert proc.returncode == 0, proc.stderr
    before = load_file(checkpoint[0] / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    assert set(after) == set(before)  # merged: plain checkpoint names, the vision tower kept
    assert all(torch.equal(before[k], after[k]) for k in before if ".vision_tower." in k)  # and frozen
    q, k = "model.decoder.layers.1.self_attn.q_proj.weight", "model.decoder.layers.1.self_attn.k_proj.weight"
    assert not torch.equal(before[q], after[q])
    assert torch.equal(before[k], after[k])
    # the adapter alone, in PEFT's format: on the base model it gives the merged export's logits
    import dgemma

    assert (out / "adapter" / "adapter_config.json").is_file()
    with_adapter, merged = dgemma.load(checkpoint[0], adapter=out / "adapter"), dgemma.load(out / "model")
    ids = [[2, 17, 99, 45]]
    torch.testing.assert_close(
        with_adapter.encoder_logits(ids), merged.encoder_logits(ids), rtol=1e-5, atol=1e-5
    )
