"""Structured-output coverage on schemas nobody on the project wrote: which ones compile, and the
keyword each refusal names. Prints a table and a summary.

    .venv/bin/python bench/schema_coverage.py

Sources: the SchemaStore schemas vendored by `check-jsonschema` (PyPI), the JSON Schema
meta-schemas in `jsonschema-specifications` (PyPI), and schemas pydantic generates for ordinary
models (tests/test_structured_clients.py's models).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgemma.structured.schema import compile_schema  # noqa: E402
from tests.schema_sources import sources  # noqa: E402


def main() -> None:
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
            rows.append((source, name, verdict, time.perf_counter() - start))
    for source in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == source]
        ok = sum(r[2] == "accepted" for r in mine)
        print(f"{source}: {ok} of {len(mine)} accepted")
        reasons = Counter(r[2] for r in mine if r[2] != "accepted")
        for reason, n in reasons.most_common(8):
            print(f"    {n:3d}  {reason}")


if __name__ == "__main__":
    main()
