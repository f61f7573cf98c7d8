"""Benchmark suites: JSONL files of tasks, or a built-in suite by name.

One task per line:

    {"id": "q1",                                   # unique in the suite (default: the line number)
     "prompt": "text" | "messages": [...] | "prompt_ids": [...],
     "raw": false,                                 # true: text without the chat template
     "infill": {"prefix": "...", "suffix": "..."}, # optional: the answer fills this gap
     "json_schema": {...},                         # optional: constrained JSON (diffusion targets)
     "max_tokens": 128,                            # optional
     "settings": {"max_denoising_steps": 32},      # optional diffusion sampler settings
     "checker": {"type": "exact", ...}}            # see dgemma.harness.checkers

Built-in: `sudoku` (held-out puzzles, generated), `sudoku:FILE` (a puzzle file), `json`, `infill`, `mixed` (files next to this module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgemma.config import SamplerConfig
from dgemma.harness.checkers import check_spec
from dgemma.tasks import sudoku

SUITES_DIR = Path(__file__).parent / "suites"
BUILTIN = ("sudoku", "json", "infill", "mixed")
FIELDS = {
    "id",
    "prompt",
    "messages",
    "prompt_ids",
    "raw",
    "infill",
    "json_schema",
    "max_tokens",
    "settings",
    "checker",
    "meta",
}


@dataclass(frozen=True)
class Task:
    id: str
    checker: dict[str, Any]
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    prompt_ids: list[int] | None = None
    raw: bool = False
    infill: dict[str, str] | None = None
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, False)}

    def text_prompt(self) -> str:
        """The task as one text prompt, for targets that take text (infill gaps spelled out)."""
        if self.infill is not None:
            return (
                "Fill in the missing code between PREFIX and SUFFIX. Answer with the missing code only.\n"
                f"PREFIX:\n{self.infill['prefix']}\nSUFFIX:\n{self.infill['suffix']}"
            )
        if self.prompt is not None:
            return self.prompt
        raise ValueError(f"task {self.id}: no text prompt")


def load_suite(name: str, limit: int | None = None, seed: int = 0) -> list[Task]:
    """A built-in suite by name, or a JSONL file; ValueError naming the first bad line."""
    if name == "sudoku":
        tasks = sudoku_suite([p.puzzle for p in sudoku.heldout_puzzles(limit or 100, seed=seed)])
    elif name.startswith("sudoku:"):  # a puzzle file (see dgemma.tasks.sudoku.files)
        from dgemma.tasks.sudoku.files import read_puzzles

        tasks = sudoku_suite([p.puzzle for p in read_puzzles(Path(name.split(":", 1)[1]))])
    else:
        path = SUITES_DIR / f"{name}.jsonl" if name in BUILTIN else Path(name)
        if not path.is_file():
            raise ValueError(f"suite {name!r}: no such built-in suite ({', '.join(BUILTIN)}) or file")
        tasks = [
            _task(line, f"{path}:{i + 1}", i)
            for i, line in enumerate(path.read_text().splitlines())
            if line.strip()
        ]
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"suite {name!r}: task ids must be unique")
    if not tasks:
        raise ValueError(f"suite {name!r} has no tasks")
    return tasks[:limit] if limit else tasks


def sudoku_suite(puzzles: list[str]) -> list[Task]:
    """Puzzles in the Sudoku model's format: `<bos>` puzzle `<sep>` -> 81 digits (any valid solution counts)."""
    return [
        Task(
            id=f"sudoku-{i}",
            prompt=f"<bos>{p}<sep>",
            raw=True,
            max_tokens=82,
            checker={"type": "sudoku", "puzzle": p},
            meta={"givens": sum(ch != "0" for ch in p)},
        )
        for i, p in enumerate(puzzles)
    ]


def _task(line: str, where: str, index: int) -> Task:
    try:
        data = json.loads(line)
    except ValueError as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a task must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    sources = [k for k in ("prompt", "messages", "prompt_ids", "infill") if data.get(k) is not None]
    if not sources or (len(sources) > 1 and sources != ["prompt", "infill"]):
        raise ValueError(f"{where}: give exactly one of prompt, messages, prompt_ids or infill")
    if "infill" in data and set(data["infill"]) != {"prefix", "suffix"}:
        raise ValueError(f"{where}: `infill` needs `prefix` and `suffix`")
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"{where}: `max_tokens` must be a positive integer")
    settings = data.get("settings", {})
    try:
        SamplerConfig().replace(**settings)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: settings: {err}") from None
    check_spec(data.get("checker"), where)
    return Task(
        id=str(data.get("id", index + 1)),
        checker=data["checker"],
        prompt=data.get("prompt"),
        messages=data.get("messages"),
        prompt_ids=data.get("prompt_ids"),
        raw=bool(data.get("raw", False)),
        infill=data.get("infill"),
        json_schema=data.get("json_schema"),
        max_tokens=max_tokens,
        settings=settings,
        meta=data.get("meta", {}),
    )
