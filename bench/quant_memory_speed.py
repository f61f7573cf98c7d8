"""Weight-only quantization: resident memory after loading and one denoising step's time, float32
against bfloat16, int8 and int4, each loaded in a fresh process from the same float32 checkpoint.

The checkpoint (random weights, 340 MiB in float32, mostly experts as in the real model) is
written here. Each process reports what loading added to its RSS (after touching every weight, as
float32 weights are the mmap'd file itself), the same after one decoder pass, its peak RSS, and
the median time of a decoder pass over a batch of canvases. Rounds interleave the variants so machine drift hits all alike.

    .venv/bin/python bench/quant_memory_speed.py [--rounds 3] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.config import ModelConfig, SamplerConfig  # noqa: E402
from dgemma.model.init import init_model  # noqa: E402
from dgemma.train.export import export  # noqa: E402

TEXT = dict(
    model_type="diffusion_gemma_text",
    vocab_size=4096,
    hidden_size=512,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    global_head_dim=128,
    num_global_key_value_heads=2,
    num_experts=24,
    top_k_experts=4,
    moe_intermediate_size=512,
    sliding_window=128,
)
VARIANTS = {  # name -> dgemma.load arguments
    "float32": {"dtype": "float32"},
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"dtype": "float32", "quantize": "int8"},
    "int4": {"dtype": "float32", "quantize": "int4"},
}
CHILD = r"""
import gc, json, statistics, sys, time
import torch, dgemma

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
torch.ones(512, 512) @ torch.ones(512, 512)  # the runtime's own start-up (thread pools) is not the model's
before = rss("VmRSS:")
model = dgemma.load(sys.argv[1], **json.loads(sys.argv[2]))
gc.collect()
with torch.no_grad():  # every weight page resident (float32 weights are the mmap'd file itself)
    sum(float(t.float().sum()) for t in model.model.state_dict().values())
loaded = {k: rss(k + ":") for k in ("VmRSS", "RssAnon", "RssFile")}
batch, C = int(sys.argv[3]), model.config.canvas_length
prompt = [[2] + list(range(10, 74))] * batch
canvas = torch.randint(0, model.config.vocab_size, (batch, C), generator=torch.Generator().manual_seed(0))
times = []
for _ in range(4):
    t = time.perf_counter()
    model.decoder_logits(prompt, canvas)
    times.append(time.perf_counter() - t)
print(json.dumps({"loaded": loaded, "after_step": {k: rss(k + ":") for k in ("VmRSS", "RssAnon", "RssFile")},
                  "before": before, "peak": rss("VmHWM:"), "step_s": statistics.median(times[1:])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = ModelConfig.from_hf(
            {"model_type": "diffusion_gemma", "canvas_length": 64, "text_config": TEXT}
        )
        directory = export(init_model(config, seed=0), Path(tmp) / "model", SamplerConfig())
        size = (directory / "model.safetensors").stat().st_size
        print(
            f"checkpoint: {size / 2**20:.0f} MiB float32; {platform.processor() or platform.machine()}, torch threads as set"
        )
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, kwargs in VARIANTS.items():
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(directory), json.dumps(kwargs), str(args.batch)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def median(runs: list[dict], key) -> float:
        return statistics.median(key(r) for r in runs)

    def model_rss(r: dict) -> int:  # what loading added: weights (anonymous or mmap'd file pages)
        return r["loaded"]["VmRSS"] - r["before"]

    base_rss = median(results["float32"], model_rss)
    base_step = median(results["float32"], lambda r: r["step_s"])
    print(
        f"{'variant':9} {'weights RSS':>12} {'x f32':>6} {'after a step':>13} {'peak RSS':>9} {'step':>9} {'x f32':>6}"
    )
    for name, runs in results.items():
        rss, step = median(runs, model_rss), median(runs, lambda r: r["step_s"])
        after = median(runs, lambda r: r["after_step"]["VmRSS"] - r["before"])
        peak = median(runs, lambda r: r["peak"])
        print(
            f"{name:9} {rss / 2**20:8.0f} MiB {rss / base_rss:6.3f} {after / 2**20:9.0f} MiB {peak / 2**20:5.0f} MiB "
            f"{step * 1e3:6.1f} ms {step / base_step:6.2f}"
        )


if __name__ == "__main__":
    main()
