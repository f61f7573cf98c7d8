"""Weight-only quantization: resident memory after loading and one denoising step's time, float32
against bfloat16, int8 and int4, each loaded in a fresh process from the same float32 checkpoint.

The checkpoint (random weights, 340 MiB in float32, mostly experts as in the real model) is
written here. Each process first loads and runs the bundled Sudoku model the same way and drops it,
so the modules a load imports and the runtime's own start-up are not counted as the model's (they
are the same ~30 MiB for every variant: the "process overhead" line); then it reports what loading
the checkpoint added to its RSS (after touching a byte of every page of every weight, without
copying, as float32 weights are the mmap'd file itself), the same after one decoder pass, its peak
RSS, and the median time of a decoder pass over a batch of canvases. Rounds interleave the variants so machine drift hits all alike.

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
from tests.quant_files import write_gguf  # noqa: E402

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
VARIANTS = {  # name -> (which checkpoint, dgemma.load arguments)
    "float32": ("float32", {"dtype": "float32"}),
    "bfloat16": ("float32", {"dtype": "bfloat16"}),
    "int8": ("float32", {"dtype": "float32", "quantize": "int8"}),
    "int4": ("float32", {"dtype": "float32", "quantize": "int4"}),
    "gguf Q8_0": ("Q8_0", {"dtype": "float32"}),  # the same weights written as GGUF files, read packed
    "gguf Q4_0": ("Q4_0", {"dtype": "float32"}),
}
GGUF_TYPES = {"Q8_0": 8, "Q4_0": 2}
CHILD = r"""
import ctypes, gc, json, statistics, sys, time
import torch, dgemma
from dgemma.apps.sudoku.solver import bundled_model

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
start = rss("VmRSS:")
torch.ones(512, 512) @ torch.ones(512, 512)  # the runtime's own start-up (thread pools) is not the model's
if sys.argv[4] == "gguf":  # the reader's modules
    import dgemma.quant.gguf_file, gguf  # noqa: E401
warm = dgemma.load(bundled_model(), **json.loads(sys.argv[2]))  # imports and first-load allocations
warm.decoder_logits([[2, 3]], torch.zeros(1, warm.config.canvas_length, dtype=torch.long))
del warm
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
before = rss("VmRSS:")
model = dgemma.load(sys.argv[1], **json.loads(sys.argv[2]))
gc.collect()
with torch.no_grad():  # every weight page resident (float32 weights are the mmap'd file itself)
    for t in model.model.state_dict().values():
        t.reshape(-1).view(torch.uint8)[::1024].sum()
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
                  "start": start, "before": before, "peak": rss("VmHWM:"), "step_s": statistics.median(times[1:]),
                  "held": sum(t.nbytes for t in model.model.state_dict().values())}))
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
        paths = {"float32": directory}
        for label, qtype in GGUF_TYPES.items():
            pick = lambda name, shape, q=qtype: q if shape[-1] % 32 == 0 else None  # noqa: E731
            paths[label] = write_gguf(directory, Path(tmp) / label, pick)[0]
        print(
            f"checkpoint: {size / 2**20:.0f} MiB float32; {platform.processor() or platform.machine()}, torch threads as set"
        )
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, (source, kwargs) in VARIANTS.items():
                kind = "gguf" if source in GGUF_TYPES else "safetensors"
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(paths[source]),
                        json.dumps(kwargs),
                        str(args.batch),
                        kind,
                    ],
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
        f"{'variant':9} {'tensors':>9} {'weights RSS':>12} {'x f32':>6} {'after a step':>13} {'peak RSS':>9} "
        f"{'step':>9} {'x f32':>6}"
    )
    for name, runs in results.items():
        rss, step = median(runs, model_rss), median(runs, lambda r: r["step_s"])
        after = median(runs, lambda r: r["after_step"]["VmRSS"] - r["before"])
        peak = median(runs, lambda r: r["peak"])
        held = median(runs, lambda r: r["held"])
        print(
            f"{name:9} {held / 2**20:5.0f} MiB {rss / 2**20:8.0f} MiB {rss / base_rss:6.3f} {after / 2**20:9.0f} MiB "
            f"{peak / 2**20:5.0f} MiB {step * 1e3:6.1f} ms {step / base_step:6.2f}"
        )
    overhead = {n: median(r, lambda x: x["before"] - x["start"]) / 2**20 for n, r in results.items()}
    print("process overhead before the checkpoint loads (imports, runtime, a first model):", end="")
    print(", ".join(f" {n} {v:.0f} MiB" for n, v in overhead.items()))


if __name__ == "__main__":
    main()
