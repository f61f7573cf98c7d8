"""The cost of schema-guaranteed JSON: constrained generation of a schema that lays out to L tokens
against unconstrained generation of L tokens, same model, prompt, seed and sampler, side by side in
one run (target: at most 1.5x). Schemas: the pydantic models of the development set and the
real-world schemas that lay out to at most --max-layout tokens.

    .venv/bin/python bench/structured_cost.py [--seeds 3] [--max-layout 800] [--model DIR] [--candidates 1 4]

Each `--candidates` value K is timed side by side (json_candidates=K: up to K candidate layouts in
the first round where the schema leaves a choice; 1 is the rules' layout alone).

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
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 4], help="json_candidates values")
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
            constrained = {k: 0.0 for k in args.candidates}
            plain, rounds, ran = 0.0, [], []
            for seed in range(args.seeds):
                sampler = dict(seed=seed, max_denoising_steps=args.steps)
                for k in args.candidates:
                    t, out = _timed(model, json_schema=schema, json_candidates=k, **sampler)
                    constrained[k] += t
                    if k == args.candidates[-1]:
                        rounds.append(out.stats[0].rounds)
                        ran.append(out.stats[0].candidates)
                t, _ = _timed(model, max_new_tokens=length, eos_token_ids=[], **sampler)
                plain += t
            rows.append((source.split(" (")[0], name, length, constrained, plain, rounds, ran))
    last = args.candidates[-1]
    print(f"model: {label}; {args.seeds} seeds; max_denoising_steps {args.steps}")
    heads = " | ".join(f"K={k} (s) | ratio" for k in args.candidates)
    print(f"| source | schema | layout tokens | plain (s) | {heads} | mean rounds, layouts run (K={last}) |")
    print("| --- " * (5 + 2 * len(args.candidates)) + "|")
    for source, name, length, c, p, r, ran in rows:
        cells = " | ".join(f"{c[k]:.2f} | {c[k] / p:.2f}" for k in args.candidates)
        print(
            f"| {source} | {name} | {length} | {p:.2f} | {cells} | {statistics.mean(r):.1f}, {statistics.mean(ran):.1f} |"
        )
    total_p = sum(r[4] for r in rows)
    for k in args.candidates:
        total_c = sum(r[3][k] for r in rows)
        ratios = sorted(r[3][k] / r[4] for r in rows)
        print(
            f"json_candidates {k}: all {len(rows)} schemas: constrained {total_c:.1f} s, plain {total_p:.1f} s, "
            f"ratio {total_c / total_p:.2f}; per schema median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f}"
        )
    with_choice = sum(1 for r in rows if max(r[6]) > 0)
    print(f"schemas with a choice (candidate layouts run, K={last}): {with_choice} of {len(rows)}")


if __name__ == "__main__":
    main()
