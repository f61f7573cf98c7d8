"""The cost of schema-guaranteed JSON: constrained generation of a schema that lays out to L tokens
against unconstrained generation of L tokens, same model, prompt, seed and sampler, side by side in
one run (target: at most 1.5x). Schemas: the pydantic models of the development set and the
real-world schemas that lay out to at most --max-layout tokens.

    .venv/bin/python bench/structured_cost.py [--seeds 3] [--max-layout 800] [--model DIR]

Without --model it uses the random-weight test checkpoint (tests/checkpoint.py): a random network
writes invalid values often, so it needs more renoise rounds than a trained one would.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgemma  # noqa: E402
from tests.checkpoint import make_checkpoint  # noqa: E402
from tests.schema_sources import sources  # noqa: E402

PROMPT = "Fill in a realistic example."


def _timed(model, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = model.generate(PROMPT, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-layout", type=int, default=800)
    parser.add_argument("--steps", type=int, default=8, help="max_denoising_steps for both modes")
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.model is None:
        directory = Path(tempfile.mkdtemp())
        make_checkpoint(directory, seed=5, std=0.05)
        model, label = dgemma.load(directory), "random-weight tiny checkpoint (tests/checkpoint.py)"
    else:
        model, label = dgemma.load(args.model), str(args.model)
    rows = []
    for source, schemas in sources().items():
        for name, schema in schemas:
            try:
                length = len(model.builder.json_plan(schema).tokens)
            except ValueError:
                continue
            if length > args.max_layout:
                continue
            constrained, plain, rounds = [], [], []
            for seed in range(args.seeds):
                sampler = dict(seed=seed, max_denoising_steps=args.steps)
                t, out = _timed(model, json_schema=schema, **sampler)
                constrained.append(t)
                rounds.append(out.stats[0].rounds)
                t, _ = _timed(model, max_new_tokens=length, eos_token_ids=[], **sampler)
                plain.append(t)
            rows.append(
                (source.split(" (")[0], name, length, sum(constrained), sum(plain), statistics.mean(rounds))
            )
    print(f"model: {label}; {args.seeds} seeds; max_denoising_steps {args.steps}")
    print("| source | schema | layout tokens | constrained (s) | plain (s) | ratio | mean rounds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for source, name, length, c, p, r in rows:
        print(f"| {source} | {name} | {length} | {c:.2f} | {p:.2f} | {c / p:.2f} | {r:.1f} |")
    total_c, total_p = sum(r[3] for r in rows), sum(r[4] for r in rows)
    ratios = sorted(r[3] / r[4] for r in rows)
    print(
        f"all {len(rows)} schemas: constrained {total_c:.1f} s, plain {total_p:.1f} s, ratio {total_c / total_p:.2f}; "
        f"per schema median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f}"
    )


if __name__ == "__main__":
    main()
