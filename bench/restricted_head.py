"""The LM head over the allowed ids alone, against the full head, at DiffusionGemma 26B-A4B's width.

When every free position of a canvas is limited to a few tokens (Sudoku digits, JSON numbers,
enums and booleans: `CanvasConstraint.head_ids`), the engine computes the tied head over those ids
and widens the result for the sampler. This times one sampler step as the engine runs it, head
plus `denoise_step`, both ways side by side in one run, on random hidden states and a random tied
embedding of the published shape (hidden 2816, vocabulary 262,144, final softcap 30), float32:

    .venv/bin/python bench/restricted_head.py [--rows 64] [--repeats 3] [--ids 10 64 1024]

Printed: the median time of each, the ratio, and whether the two steps chose the same tokens.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.config import SamplerConfig  # noqa: E402
from dgemma.model.transformer import DiffusionGemma  # noqa: E402
from dgemma.sampling import denoise_step  # noqa: E402
from dgemma.sampling.constraints import CanvasConstraint  # noqa: E402

HIDDEN, VOCAB, SOFTCAP = 2816, 262_144, 30.0


def _step(head, hidden, constraint, restricted: bool, sampler: SamplerConfig):
    C = hidden.shape[0]
    if restricted:
        logits = constraint.widen(DiffusionGemma.logits(head, hidden, constraint.head_ids), VOCAB)
    else:
        logits = DiffusionGemma.logits(head, hidden)
    history = torch.full((sampler.stability_threshold, C), -1, dtype=torch.long)
    canvas = torch.zeros(C, dtype=torch.long)
    return denoise_step(logits, canvas, history, 4, sampler, torch.Generator().manual_seed(0), constraint)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=64, help="canvas positions")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ids", type=int, nargs="+", default=[10, 64, 1024], help="allowed ids per canvas")
    args = parser.parse_args()
    torch.manual_seed(0)
    embed = torch.nn.Embedding(VOCAB, HIDDEN)
    torch.nn.init.normal_(embed.weight, std=0.02)
    head = SimpleNamespace(embed_tokens=embed, config=SimpleNamespace(final_logit_softcapping=SOFTCAP))
    hidden = torch.randn(args.rows, HIDDEN)
    sampler = SamplerConfig()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"rows {args.rows}, hidden {HIDDEN}, vocabulary {VOCAB}, float32, median of {args.repeats}")
    print("| allowed ids | full head + step (ms) | restricted head + step (ms) | ratio | same tokens |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        # the process's first full-vocabulary buffers come from the OS (page faults): paid here, once
        warm = torch.zeros(args.rows, VOCAB, dtype=torch.bool)
        warm[:, :8] = True
        warm_up = CanvasConstraint(
            torch.zeros(args.rows, dtype=torch.bool), torch.zeros(args.rows, dtype=torch.long), warm
        )
        for _ in range(2):
            _step(head, hidden, warm_up, True, sampler), _step(head, hidden, warm_up, False, sampler)
        for n in args.ids:
            allowed = torch.zeros(args.rows, VOCAB, dtype=torch.bool)
            allowed[:, torch.randperm(VOCAB)[:n]] = True
            fixed = torch.zeros(args.rows, dtype=torch.bool)
            constraint = CanvasConstraint(fixed, torch.zeros(args.rows, dtype=torch.long), allowed)
            times: dict[bool, list[float]] = {False: [], True: []}
            outs = {k: _step(head, hidden, constraint, k, sampler) for k in (False, True)}  # warm-up
            for _ in range(args.repeats):
                for restricted in (False, True):
                    start = time.perf_counter()
                    outs[restricted] = _step(head, hidden, constraint, restricted, sampler)
                    times[restricted].append(time.perf_counter() - start)
            full, few = (statistics.median(times[k]) * 1e3 for k in (False, True))
            same = torch.equal(outs[False].argmax, outs[True].argmax)
            print(f"| {n} | {full:.1f} | {few:.1f} | {full / few:.1f}x | {same} |")


if __name__ == "__main__":
    main()
