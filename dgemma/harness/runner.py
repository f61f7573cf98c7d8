"""Running a suite on targets: retries with new seeds, results appended as they complete, resumable.

`OUT/run.json` holds the run's settings; `OUT/results.jsonl` one line per (target, sweep point, task)
as soon as it is measured (flushed and fsynced). A rerun with the same settings skips what is
there, so a killed run loses at most the task it was on; a run with other settings into the same
directory is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgemma.harness.checkers import accept
from dgemma.harness.suites import Task

SEED_STRIDE = 7919  # retry k of task i runs with seed + i + k * SEED_STRIDE


@dataclass(frozen=True)
class RunSpec:
    suite: str
    targets: tuple[str, ...]
    model: str
    limit: int | None = None
    max_retries: int = 0
    seed: int = 0
    sweep: tuple[str, tuple[Any, ...]] | None = None  # (sampler setting, values)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "targets": list(self.targets),
            "model": self.model,
            "limit": self.limit,
            "max_retries": self.max_retries,
            "seed": self.seed,
            "sweep": None if self.sweep is None else [self.sweep[0], list(self.sweep[1])],
            "settings": self.settings,
        }


def parse_sweep(text: str | None) -> tuple[str, tuple[Any, ...]] | None:
    """'max_denoising_steps=8,16,32' -> ('max_denoising_steps', (8, 16, 32))."""
    if text is None:
        return None
    key, _, values = text.partition("=")
    try:
        parsed = tuple(json.loads(v) for v in values.split(","))
    except ValueError:
        parsed = ()
    if not key or not parsed:
        raise ValueError(f"`--sweep` must look like max_denoising_steps=8,16,32, got {text!r}")
    return key, parsed


def points(spec: RunSpec, target: str) -> list[dict[str, Any] | None]:
    """The sweep points a target runs: every value for diffusion targets, one run for AR ones."""
    if spec.sweep is None or target.startswith("local:ar"):
        return [None]
    key, values = spec.sweep
    return [{key: v} for v in values]


def point_label(point: dict[str, Any] | None) -> str:
    return "" if point is None else ",".join(f"{k}={v}" for k, v in point.items())


def open_run(out: Path, spec: RunSpec) -> list[dict[str, Any]]:
    """Create or reopen a run directory; returns the records already measured."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / "run.json"
    if config.exists():
        if json.loads(config.read_text()) != spec.to_dict():
            raise ValueError(f"{out} holds a run with other settings; use another --out or delete it")
    else:
        tmp = config.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec.to_dict(), indent=2))
        os.replace(tmp, config)
    results = out / "results.jsonl"
    records, good = [], 0
    if results.exists():
        raw = results.read_bytes()
        for line in raw.splitlines(keepends=True):
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a kill: drop it and everything after
            good += len(line)
        if good < len(raw):
            with open(results, "r+b") as f:
                f.truncate(good)
    return records


def run_suite(
    spec: RunSpec,
    tasks: list[Task],
    targets: dict[str, Any],
    out: Path,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
) -> list[dict[str, Any]]:
    """Measure every (target, point, task) not yet in OUT; returns all records, old and new."""
    records = open_run(out, spec)
    done = {(r["target"], r["point"], r["task"]) for r in records}
    with open(out / "results.jsonl", "a", encoding="utf-8") as sink:
        for label, target in targets.items():
            for point in points(spec, label):
                for index, task in enumerate(tasks):
                    key = (label, point_label(point), task.id)
                    if key in done:
                        continue
                    record = _measure(spec, target, label, point, index, task)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())
                    records.append(record)
                    on_record(record)
    return records


def _measure(
    spec: RunSpec, target: Any, label: str, point: dict | None, index: int, task: Task
) -> dict[str, Any]:
    settings = {**spec.settings, **(point or {})}
    attempts = []
    for k in range(spec.max_retries + 1):
        seed = spec.seed + index + k * SEED_STRIDE
        attempt = target.run(task, seed, settings)
        if attempt.error is None:
            attempt.accepted = accept(attempt.text, task.checker, task.as_dict())
        attempts.append(attempt.to_dict())
        if attempt.accepted:
            break
    return {
        "target": label,
        "point": point_label(point),
        "task": task.id,
        "meta": task.meta,
        "accepted": attempts[-1]["accepted"],
        "retries": len(attempts) - 1,
        "attempts": attempts,
    }


def total_work(spec: RunSpec, tasks: list[Task]) -> int:
    return sum(len(points(spec, t)) for t in spec.targets) * len(tasks)
