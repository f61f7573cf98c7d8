"""Schema-constrained JSON against plain generation with the same model, side by side in one run.

For each schema of the test suite (tests/test_structured.py, 24 schemas) and each seed, the same
prompt (the schema in words plus "Answer with JSON only.") is run twice: with `json_schema=` and
without it (max_new_tokens = the schema's layout length). Reported per mode: the share of outputs
that parse and validate (checked with the independent `jsonschema` package), mean rounds and
repaired slots for the constrained mode, and wall time.

    .venv/bin/python bench/json_validity.py [--seeds 5] [--model DIR]

Without --model it uses a random-weight checkpoint built here (no trained text model ships with
dgemma): it shows the guarantee, not quality.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dgemma  # noqa: E402
from dgemma.structured.generate import plan_json  # noqa: E402
from tests.checkpoint import make_checkpoint  # noqa: E402
from tests.test_structured import SCHEMAS  # noqa: E402


def _valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.model is None:
        directory = Path(tempfile.mkdtemp())
        make_checkpoint(directory, seed=5, std=0.05)
        model = dgemma.load(directory)
        label = "random-weight tiny checkpoint (tests/checkpoint.py, std 0.05)"
    else:
        model, label = dgemma.load(args.model), str(args.model)
    totals = {"constrained": [0, 0, 0.0], "plain": [0, 0, 0.0]}
    rounds, repaired = [], []
    for schema in SCHEMAS:
        prompt = f"Answer with JSON only, matching this JSON Schema: {json.dumps(schema)}"
        length = len(
            plan_json(schema, model.codec, model.defaults.pad_token_id, model.defaults.eos_token_ids).tokens
        )
        for seed in range(args.seeds):
            start = time.perf_counter()
            out = model.generate(prompt, json_schema=schema, seed=seed)
            totals["constrained"][2] += time.perf_counter() - start
            totals["constrained"][0] += _valid(out.texts[0], schema)
            totals["constrained"][1] += 1
            rounds.append(out.stats[0].rounds)
            repaired.append(out.stats[0].repaired_slots)
            start = time.perf_counter()
            plain = model.generate(prompt, seed=seed, max_new_tokens=max(length, 1))
            totals["plain"][2] += time.perf_counter() - start
            totals["plain"][0] += _valid(plain.texts[0].strip(), schema)
            totals["plain"][1] += 1
    print(f"model: {label}; {len(SCHEMAS)} schemas x {args.seeds} seeds")
    for mode, (ok, n, wall) in totals.items():
        print(f"  {mode:12s} valid {ok}/{n} = {ok / n:6.1%}   wall {wall:6.1f} s")
    print(
        f"  constrained: mean rounds {sum(rounds) / len(rounds):.2f} (0: all literal, 1: no renoise round), "
        f"mean repaired slots {sum(repaired) / len(repaired):.2f}, "
        f"outputs needing a renoise round {sum(r > 1 for r in rounds) / len(rounds):.1%}"
    )


if __name__ == "__main__":
    main()
