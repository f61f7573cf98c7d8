"""Structured-output coverage on schemas nobody on the project wrote: which ones compile, and the
keyword each refusal names. Prints a table and a summary.

    .venv/bin/python bench/schema_coverage.py             # dgemma only
    .venv/bin/python bench/schema_coverage.py --compare   # and llguidance, xgrammar (installed by hand)

Sources: the SchemaStore schemas vendored by `check-jsonschema` (PyPI), the JSON Schema
meta-schemas in `jsonschema-specifications` (PyPI), and schemas pydantic generates for ordinary
models (tests/test_structured_clients.py's models).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.structured.schema import compile_schema  # noqa: E402
from tests.schema_sources import sources  # noqa: E402


def llguidance_verdict(schema: dict) -> tuple[str, float]:
    """llguidance's JSON-schema grammar compilation on the same schema (optional: installed by hand)."""
    import llguidance

    start = time.perf_counter()
    try:
        grammar = llguidance.JsonCompiler().compile(json.dumps(schema))
        problem = llguidance.LLMatcher.validate_grammar(grammar)
        verdict = "accepted" if not problem else "refused"
    except Exception:  # its compile raises ValueError / RuntimeError on unsupported keywords
        verdict = "refused"
    return verdict, time.perf_counter() - start


def xgrammar_verdict(schema: dict) -> tuple[str, float]:
    """xgrammar's grammar from the same schema, default settings (optional: installed by hand;
    `pip install --no-deps xgrammar apache-tvm-ffi`, as its triton dependency serves only GPUs)."""
    import xgrammar

    start = time.perf_counter()
    try:
        xgrammar.Grammar.from_json_schema(json.dumps(schema))
        verdict = "accepted"
    except Exception:  # RuntimeError / ValueError naming what it does not support
        verdict = "refused"
    return verdict, time.perf_counter() - start


OTHERS = {"llguidance": llguidance_verdict, "xgrammar": xgrammar_verdict}


def main() -> None:
    others = list(OTHERS) if "--compare" in sys.argv else []
    rows = []
    for source, schemas in sources().items():
        for name, schema in schemas:
            start = time.perf_counter()
            try:
                compile_schema(schema)
                verdict = "accepted"
            except (ValueError, RecursionError) as err:
                found = re.search(r"'([^']+)'|`([^`]+)`", str(err))
                verdict = "refused: " + (next(g for g in found.groups() if g) if found else str(err)[:40])
            seconds = time.perf_counter() - start
            rows.append((source, name, verdict, seconds, [OTHERS[o](schema) for o in others]))
    print(
        "| source | schemas | dgemma accepted | dgemma compile median / max (ms) |"
        + "".join(f" {o} accepted | {o} median / max (ms) |" for o in others)
    )
    print("| --- | --- | --- | --- |" + " --- | --- |" * len(others))
    for source in [*dict.fromkeys(r[0] for r in rows), "all"]:
        mine = [r for r in rows if source in (r[0], "all")]
        ok = sum(r[2] == "accepted" for r in mine)
        times = sorted(r[3] * 1000 for r in mine)
        line = f"| {source} | {len(mine)} | {ok} | {times[len(times) // 2]:.1f} / {times[-1]:.0f} |"
        for k in range(len(others)):
            theirs = sorted(r[4][k][1] * 1000 for r in mine)
            accepted = sum(r[4][k][0] == "accepted" for r in mine)
            line += f" {accepted} | {theirs[len(theirs) // 2]:.1f} / {theirs[-1]:.0f} |"
        print(line)
    for source in dict.fromkeys(r[0] for r in rows):
        reasons = Counter(r[2] for r in rows if r[0] == source and r[2] != "accepted")
        for reason, n in reasons.most_common(8):
            print(f"    {source}: {n} {reason}")


if __name__ == "__main__":
    main()
