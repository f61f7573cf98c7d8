"""dgemma against transformers' `DiffusionGemmaForBlockDiffusion.generate`, side by side, one run.

Both load the same random checkpoint built here and get the same prompt, seed and step budget, with
no end token, so both run every canvas for every step (a random net never meets the confidence
stop): the same work on both sides. Runs are interleaved so drifts in machine speed hit all alike,
and each timed run follows an untimed run of the same variant (`--no-rewarm` times them back to
back): run right after another variant, a variant pays for the caches that one left (on this
2-core VM dgemma's default mode ran ~12% slower right after a reference-draw run).
It prints median wall times, the ratios, and on how many seeds dgemma with reference draws made
the reference's tokens (it does, unless the random net's self-conditioning loop amplifies rounding:
see tests/reference.py). Plain "dgemma" is the default sampler (inverse-CDF draws).

    .venv/bin/python bench/generate_vs_reference.py [--size tiny|small|issue|wide] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgemma  # noqa: E402
from tests.reference import build_reference  # noqa: E402

SMALL_TEXT = dict(  # 6 layers, width 128, 8 experts top-2
    vocab_size=2048,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    global_head_dim=64,
    num_global_key_value_heads=1,
    sliding_window=48,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    num_experts=8,
    top_k_experts=2,
    moe_intermediate_size=64,
)
SIZES = {
    # the parity tests' config: 4 layers, width 32, 4 experts
    "tiny": dict(canvas_length=8, prompt=16, max_new=32, text={}),
    # a larger but still CPU-sized config of the same architecture
    "small": dict(
        canvas_length=32,
        prompt=64,
        max_new=128,
        text=SMALL_TEXT,
    ),
    # issue 15's config: vocab 4096, width 128, 6 layers, 8 experts top-2, canvas 64, 12 steps
    "issue": dict(
        canvas_length=64,
        prompt=96,
        max_new=192,
        steps=12,
        text=dict(SMALL_TEXT, vocab_size=4096, sliding_window=64),
    ),
    # the real vocabulary and canvas at width 1024: lm_head, sampler and experts all count
    "wide": dict(
        canvas_length=256,
        prompt=512,
        max_new=256,
        steps=8,
        text=dict(
            vocab_size=262144,
            hidden_size=1024,
            intermediate_size=2048,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=128,
            global_head_dim=256,
            num_global_key_value_heads=2,
            sliding_window=512,
            layer_types=["sliding_attention", "full_attention"],
            num_experts=16,
            top_k_experts=4,
            moe_intermediate_size=512,
        ),
    ),
}
SAMPLER = dict(t_min=0.4, t_max=0.8, stability_threshold=1, confidence_threshold=0.005)
DEFAULT_STEPS = 16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument(
        "--no-rewarm", action="store_true", help="time each run right after the previous variant's"
    )
    args = parser.parse_args()
    size = SIZES[args.size]
    sampler = dict(SAMPLER, max_denoising_steps=size.get("steps", DEFAULT_STEPS))
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("dgemma").setLevel(logging.ERROR)
    torch.set_num_threads(torch.get_num_threads())

    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    with tempfile.TemporaryDirectory() as tmp:
        # std 0.05: a well-conditioned random net, so both produce the same tokens (see tests/reference.py)
        build_reference(Path(tmp), seed=0, canvas_length=size["canvas_length"], std=0.05, **size["text"])
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp).eval()
        mine = dgemma.load(tmp)
        compiled = None if args.no_compile else dgemma.load(tmp, compile=True)
    V = mine.config.vocab_size
    prompt = torch.randint(5, V, (size["prompt"],), generator=torch.Generator().manual_seed(0)).tolist()

    def run_reference(seed: int) -> list[int]:
        torch.manual_seed(seed)
        out = ref.generate(
            torch.tensor([prompt]),
            max_new_tokens=size["max_new"],
            eos_token_id=None,
            pad_token_id=0,
            sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
            **sampler,
        )
        return out.sequences[0, len(prompt) :].tolist()

    def runner(model, draw: str):
        def run(seed: int) -> list[int]:
            out = model.generate(
                prompt, max_new_tokens=size["max_new"], seed=seed, eos_token_ids=[], draw=draw, **sampler
            )
            return out.token_ids[0]

        return run

    # "reference draws" makes torch.multinomial's draws (the same tokens as transformers for a
    # well-conditioned net); the default draws by inverse CDF from the same distribution
    runners = {
        "transformers": run_reference,
        "dgemma ref draws": runner(mine, "reference"),
        "dgemma": runner(mine, "fast"),
    }
    if compiled is not None:
        runners["dgemma compiled"] = runner(compiled, "fast")
    times = {name: [] for name in runners}
    agree = {name: 0 for name in runners if "ref draws" in name}
    for name, fn in runners.items():
        start = time.perf_counter()
        fn(99)  # warm-up (includes compilation for the compiled variant)
        if name == "dgemma compiled":
            print(f"  (first compiled run, with compilation: {time.perf_counter() - start:.1f} s)")
    for seed in range(args.repeats):  # interleaved, so drifts in machine speed hit every variant alike
        outputs = {}
        for name, fn in runners.items():
            if not args.no_rewarm:
                fn(seed + 1000)
            start = time.perf_counter()
            outputs[name] = fn(seed)
            times[name].append(time.perf_counter() - start)
        for name in agree:
            agree[name] += outputs[name] == outputs["transformers"][: size["max_new"]]

    med = {k: statistics.median(v) for k, v in times.items()}
    # the ratio within each round, where both sides met the same machine state; its median too
    paired = {
        k: statistics.median(r / t for r, t in zip(times["transformers"], v, strict=True))
        for k, v in times.items()
        if k != "transformers"
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"config {args.size}: prompt {size['prompt']}, max_new_tokens {size['max_new']}, canvas {size['canvas_length']}, "
        f"max_denoising_steps {sampler['max_denoising_steps']}, {args.repeats} seeds"
    )
    for name, n in agree.items():
        print(f"  {name}: identical tokens to transformers on {n}/{args.repeats} seeds")
    for name, t in med.items():
        ratio = (
            ""
            if name == "transformers"
            else f"   {med['transformers'] / t:.2f}x faster than transformers"
            f" (per round: median {paired[name]:.2f}x)"
        )
        print(f"  {name:16s} median {t * 1000:8.1f} ms{ratio}")


if __name__ == "__main__":
    main()
