"""One decoder step at DiffusionGemma 26B-A4B's real width, against this machine's own floors.

The model is the published shape (`dgemma inspect --config diffusiongemma-26b-a4b`: hidden 2816,
16 heads, 128 experts of 704 with 8 routed, shared MLP 2112, vocabulary 262,144 tied to the head)
cut to `--layers` decoder layers, random weights (the last layer is always a global one, as the
reference forces it: one layer is a global layer, two are a sliding and a global one). A prompt of
`--prompt` tokens is encoded into the cache, then each denoising step of a `--canvas`-token canvas
is timed part by part, as the engine runs it:

    layers     the bidirectional decoder over the canvas (attention to the cache, router, experts)
    head       the tied LM head and the final softcap, float32 logits (canvas, vocabulary)
    sampler    temperature, entropy, the draw, acceptance, renoise (dgemma.sampling.denoise_step)
    self-cond  the probabilities fed back as the expected embedding (canvas, vocabulary) @ (vocabulary, hidden)

Floors, measured here in the same run: the best matmul rate of float GEMMs of the step's shapes
(and a square one) and the read bandwidth of a sum over a tensor larger than the caches. A part's floor is the
larger of its FLOPs (counted with torch's FlopCounterMode) over that rate and its bytes (weights
read, plus logits and probabilities written and read) over that bandwidth. Then a short
autoregressive run on the same model gives AR tokens/s, and the peak RSS is printed.

    .venv/bin/python bench/layer_step.py [--layers 1] [--steps 3] [--prompt 512] [--canvas 256]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.config import ModelConfig  # noqa: E402
from dgemma.config.presets import PRESETS  # noqa: E402
from dgemma.config.sampler import SamplerConfig  # noqa: E402
from dgemma.engine.autoregressive import run_autoregressive  # noqa: E402
from dgemma.engine.cache import KVCache  # noqa: E402
from dgemma.engine.passes import decode_rows, encode_rows  # noqa: E402
from dgemma.engine.request import Request  # noqa: E402
from dgemma.model.init import init_model  # noqa: E402
from dgemma.model.layers import Experts  # noqa: E402
from dgemma.sampling import denoise_step  # noqa: E402

PATTERN = ["sliding_attention"] * 5 + ["full_attention"]  # the published model's layer order


def config(layers: int, canvas: int) -> ModelConfig:
    raw = {**PRESETS["diffusiongemma-26b-a4b"], "canvas_length": canvas}
    raw.pop("vision_config")
    text = {**raw["text_config"], "num_hidden_layers": layers}
    text["layer_types"] = [PATTERN[i % len(PATTERN)] for i in range(layers)]
    return ModelConfig.from_hf({**raw, "text_config": text})


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` (m, k) @ (k, n) products (the step's head and self-conditioning
    products have these shapes with n or k = the vocabulary)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best


def read_bandwidth(num_bytes: int = 1 << 30, repeats: int = 3) -> float:
    """Bytes/s of the best of `repeats` sums over a float32 tensor of `num_bytes`."""
    x = torch.ones(num_bytes // 4)
    x.sum()
    return num_bytes / min(_timed(x.sum) for _ in range(repeats))


@contextlib.contextmanager
def _useful_products():
    """Count the experts' FLOPs on the grouped path: the padded path's padding rows are work done,
    not work the step needs, and must not lower the floor ratio."""
    padded = Experts._padded
    Experts._padded = lambda self, *args: None
    try:
        yield
    finally:
        Experts._padded = padded


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parts_of_step(model, cache, canvas, soft, history, sampler, generator, steps_left, buffers):
    """The four parts of one denoising step, each a closure returning what the next one needs;
    `buffers`: the kept (logits, probabilities) tensors the engine writes into on a CPU."""
    state = {"canvas": canvas, "soft": soft, "history": history}

    def layers():
        state["hidden"] = decode_rows(model, cache, [0], state["canvas"][None], state["soft"])[0]

    def head():  # the softcap as the engine writes it for this sampler's draw mode
        state["logits"] = model.logits(state["hidden"], exact=sampler.draw == "reference", out=buffers[0])

    def sampler_step():
        out = denoise_step(
            state.pop("logits"),
            state["canvas"],
            state["history"],
            steps_left,
            sampler,
            generator,
            probs_out=buffers[1],
        )
        state.update(canvas=out.canvas, history=out.history, probs=out.probs)

    def self_cond():
        state["soft"] = model.expected_embedding(state.pop("probs"))[None]

    return state, {"layers": layers, "head": head, "sampler": sampler_step, "self-cond": self_cond}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed denoising steps (after one warm-up)")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--canvas", type=int, default=256)
    parser.add_argument("--ar-tokens", type=int, default=8, help="tokens of the autoregressive run (0: skip)")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = torch.float32  # this CPU has no bfloat16 arithmetic; a GPU run would use bfloat16
    cfg = config(args.layers, args.canvas)
    V, H = cfg.vocab_size, cfg.hidden_size
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {dtype}"
    )

    shapes = [(args.canvas, H, 65_536), (args.canvas, 65_536, H), (2048, 2048, 2048)]
    rates = {shape: matmul_rate(*shape, dtype) for shape in shapes}
    best = max(rates, key=rates.get)
    rate = rates[best]
    bandwidth = read_bandwidth()
    print(
        "matmul: "
        + ", ".join(f"{m}x{k}@{k}x{n} {r / 1e9:.1f}" for (m, k, n), r in rates.items())
        + " GFLOP/s"
    )
    print(
        f"floors: matmul {rate / 1e9:.1f} GFLOP/s (the best shape above), "
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s (sum over 1 GiB)"
    )

    start = time.perf_counter()
    model = init_model(cfg, seed=0)
    print(
        f"model: {args.layers} layer(s) {'/'.join(t.value for t in cfg.layer_types)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, built in "
        f"{time.perf_counter() - start:.1f} s"
    )

    cache = KVCache(cfg, 1, args.prompt + args.canvas, dtype, model.device)
    prompt = torch.randint(0, V, (args.prompt,)).tolist()
    with torch.inference_mode():
        start = time.perf_counter()
        encode_rows(model, cache, [0], [prompt])
        prefill = time.perf_counter() - start
        sampler = SamplerConfig(max_denoising_steps=args.steps + 1, stability_threshold=0)
        generator = torch.Generator().manual_seed(0)
        canvas = torch.randint(0, V, (args.canvas,), generator=generator)
        history = torch.full((0, args.canvas), -1, dtype=torch.long)
        buffers = (torch.empty(args.canvas, V), torch.empty(args.canvas, V))
        state, parts = parts_of_step(
            model, cache, canvas, None, history, sampler, generator, args.steps + 1, buffers
        )
        flops: dict[str, int] = {}
        for name, part in parts.items():  # the warm-up step, FLOPs counted
            with FlopCounterMode(display=False) as counter, _useful_products():
                part()
            flops[name] = counter.get_total_flops()
        times: dict[str, list[float]] = {name: [] for name in parts}
        for step in range(args.steps):
            state, parts = parts_of_step(
                model,
                cache,
                state["canvas"],
                state["soft"],
                state["history"],
                sampler,
                generator,
                args.steps - step,
                buffers,
            )
            for name, part in parts.items():
                times[name].append(_timed(part))

    layer_bytes = sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if n.startswith("layers.")
    )
    embed_bytes = model.embed_tokens.weight.numel() * model.embed_tokens.weight.element_size()
    full = args.canvas * V * 4  # one (canvas, vocabulary) float32 tensor
    moved = {  # bytes each part must at least read or write
        "layers": layer_bytes,  # a 256-token canvas routes to (nearly) every expert
        "head": embed_bytes + full,
        "sampler": 4 * full,  # read the logits, write and read the probabilities, read for the draw
        "self-cond": embed_bytes + full,
    }
    print(
        f"prompt {args.prompt} tokens encoded in {prefill * 1e3:.0f} ms; canvas {args.canvas}, "
        f"median of {args.steps} steps:"
    )
    print(f"  {'part':<10} {'ms':>9} {'GFLOP':>8} {'MB':>8} {'floor ms':>9} {'x floor':>8}")
    achieved = max(flops[n] / statistics.median(times[n]) for n in ("head", "self-cond"))
    if achieved > rate:  # the step's own products ran faster than the probes: that rate is the floor
        print(
            f"  (the head / self-conditioning products reached {achieved / 1e9:.1f} GFLOP/s: floor rate raised to it)"
        )
        rate = achieved
    total = total_floor = 0.0
    for name in parts:
        ms = statistics.median(times[name]) * 1e3
        floor = max(flops[name] / rate, moved[name] / bandwidth) * 1e3
        total, total_floor = total + ms, total_floor + floor
        print(
            f"  {name:<10} {ms:9.1f} {flops[name] / 1e9:8.1f} {moved[name] / 1e6:8.0f} "
            f"{floor:9.1f} {ms / floor:7.2f}x"
        )
    print(f"  {'step':<10} {total:9.1f} {'':>8} {'':>8} {total_floor:9.1f} {total / total_floor:7.2f}x")

    if args.ar_tokens > 1:  # per token: the difference between an n-token and a 1-token run
        runs = {}
        for n in (1, args.ar_tokens):
            request = Request(prompt, n, SamplerConfig(), seed=0, eos_token_ids=())
            start = time.perf_counter()
            for _ in run_autoregressive(model, [request]):
                pass
            runs[n] = time.perf_counter() - start
        per_token = (runs[args.ar_tokens] - runs[1]) / (args.ar_tokens - 1)
        experts = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".experts." in n)
        touched = embed_bytes + layer_bytes - experts + experts * cfg.top_k_experts / cfg.num_experts
        print(
            f"autoregressive: {per_token * 1e3:.0f} ms per token after the {args.prompt}-token prompt "
            f"({1 / per_token:.2f} tokens/s); floor {touched / bandwidth * 1e3:.0f} ms (reading the head "
            f"and the weights one token touches, {touched / 1e6:.0f} MB): {per_token * bandwidth / touched:.2f}x"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB (weights {(layer_bytes + embed_bytes) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
