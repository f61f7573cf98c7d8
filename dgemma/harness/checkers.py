"""Checkers: does an answer count? Each takes the output text and the task's checker spec.

{"type": "exact", "value": "Paris", "strip": true, "ignore_case": false}
{"type": "regex", "pattern": "\\b42\\b"}                    (re.search, DOTALL)
{"type": "json_schema", "schema": {...}}                    (parses; validates with jsonschema if
                                                             installed, else dgemma's validator)
{"type": "sudoku", "puzzle": "81 characters, 0 or . for blanks"}
{"type": "python", "asserts": "assert add(1, 2) == 3", "prefix": "", "suffix": "", "timeout": 10}
                                                            (prefix + answer + suffix + asserts run
                                                             in a fresh interpreter)
{"type": "callable", "function": "package.module:function"} (function(text, task) -> bool)
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dgemma.structured.schema import compile_schema
from dgemma.structured.validate import validate
from dgemma.tasks import sudoku


def _exact(text: str, spec: dict) -> bool:
    want = spec["value"]
    got = text.strip() if spec.get("strip", True) else text
    if spec.get("ignore_case"):
        return got.lower() == want.lower()
    return got == want


def _regex(text: str, spec: dict) -> bool:
    return re.search(spec["pattern"], text, re.DOTALL) is not None


def _json_schema(text: str, spec: dict) -> bool:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return False
    try:
        import jsonschema
    except ImportError:
        return not validate(value, spec["schema"])
    try:
        jsonschema.validate(value, spec["schema"])
    except jsonschema.ValidationError:
        return False
    return True


def _sudoku(text: str, spec: dict) -> bool:
    digits = "".join(c for c in text if not c.isspace())
    return len(digits) == 81 and digits.isdigit() and sudoku.is_valid_solution(spec["puzzle"], digits)


def _python(text: str, spec: dict) -> bool:
    program = spec.get("prefix", "") + text + spec.get("suffix", "") + "\n" + spec["asserts"] + "\n"
    try:
        compile(program, "<answer>", "exec")
    except (SyntaxError, ValueError):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answer.py"
        path.write_text(program)
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(path)],
                capture_output=True,
                timeout=spec.get("timeout", 10),
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0


def _callable(text: str, spec: dict, task: dict) -> bool:
    return bool(load_callable(spec["function"])(text, task))


def load_callable(name: str) -> Callable[[str, dict], Any]:
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise ValueError(f"checker function {name!r} must be 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"checker function {name!r} cannot be loaded: {err}") from None


CHECKERS: dict[str, Callable[[str, dict], bool]] = {
    "exact": _exact,
    "regex": _regex,
    "json_schema": _json_schema,
    "sudoku": _sudoku,
    "python": _python,
}
REQUIRED = {
    "exact": "value",
    "regex": "pattern",
    "json_schema": "schema",
    "sudoku": "puzzle",
    "python": "asserts",
    "callable": "function",
}


def check_spec(spec: Any, where: str) -> None:
    """ValueError naming the problem of a checker spec (before any generation runs)."""
    if not isinstance(spec, dict) or spec.get("type") not in REQUIRED:
        raise ValueError(f"{where}: `checker.type` must be one of {', '.join(REQUIRED)}")
    key = REQUIRED[spec["type"]]
    if key not in spec:
        raise ValueError(f"{where}: a {spec['type']} checker needs `{key}`")
    if spec["type"] == "regex":
        try:
            re.compile(spec["pattern"])
        except re.error as err:
            raise ValueError(f"{where}: bad regex: {err}") from None
    try:
        if spec["type"] == "callable":
            load_callable(spec["function"])
        if spec["type"] == "sudoku":
            sudoku.parse(spec["puzzle"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if spec["type"] == "json_schema":
        try:
            import jsonschema

            jsonschema.Draft202012Validator.check_schema(spec["schema"])
        except ImportError:
            compile_schema(spec["schema"])
        except jsonschema.SchemaError as err:
            raise ValueError(f"{where}: bad JSON schema: {err.message}") from None


def accept(text: str, spec: dict, task: dict) -> bool:
    if spec["type"] == "callable":
        return _callable(text, spec, task)
    return CHECKERS[spec["type"]](text, spec)
