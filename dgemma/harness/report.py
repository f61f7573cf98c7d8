"""The report of a run: per target (and sweep point) medians, p90s, acceptance and retry rates, cost
per accepted answer, targets side by side with ratios; report.json, report.md and plots.

Latency, time to first output, tokens per second, tokens per forward and denoising steps are
taken from each task's first attempt (what a user waits for once); cost per accepted answer adds
every attempt's latency, retries included, and divides by the tasks accepted.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def group_label(record: dict[str, Any]) -> str:
    return record["target"] + (f" [{record['point']}]" if record["point"] else "")


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(group_label(r), []).append(r)
    out = {}
    for label, rs in groups.items():
        first = [r["attempts"][0] for r in rs]
        latency = [a["latency_s"] for a in first]
        ttfo = [a["ttfo_s"] for a in first]
        tps = [a["tokens"] / a["latency_s"] for a in first if a["latency_s"] > 0]
        steps = [a["steps"] for a in first if a["steps"]]
        tpf = [a["tokens"] / a["steps"] for a in first if a["steps"]]
        mem = [a["peak_mem_mib"] for r in rs for a in r["attempts"] if a["peak_mem_mib"] is not None]
        accepted = sum(r["accepted"] for r in rs)
        total_time = sum(a["latency_s"] for r in rs for a in r["attempts"])
        out[label] = {
            "target": rs[0]["target"],
            "point": rs[0]["point"],
            "tasks": len(rs),
            "accepted": accepted,
            "acceptance_rate": accepted / len(rs),
            "first_try_acceptance_rate": sum(a["accepted"] for a in first) / len(rs),
            "retry_rate": sum(r["retries"] > 0 for r in rs) / len(rs),
            "mean_retries": sum(r["retries"] for r in rs) / len(rs),
            "errors": sum(a["error"] is not None for r in rs for a in r["attempts"]),
            "latency_median_s": _median(latency),
            "latency_p90_s": _quantile(latency, 0.9),
            "ttfo_median_s": _median(ttfo),
            "ttfo_p90_s": _quantile(ttfo, 0.9),
            "tokens_per_s_median": _median(tps),
            "tokens_per_forward_median": _median(tpf),
            "denoising_steps_median": _median(steps),
            "peak_mem_mib": max(mem) if mem else None,
            "cost_per_accepted_s": total_time / accepted if accepted else None,
        }
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each group against the first: latency and time-to-first-output ratios (first / this; >1: this is
    faster), and acceptance difference in points."""
    labels = list(summary)
    if not labels:
        return {}
    base = summary[labels[0]]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        label: {
            "vs": labels[0],
            "speedup_latency": ratio(base["latency_median_s"], s["latency_median_s"]),
            "speedup_ttfo": ratio(base["ttfo_median_s"], s["ttfo_median_s"]),
            "acceptance_delta": s["acceptance_rate"] - base["acceptance_rate"],
        }
        for label, s in summary.items()
    }


def _fmt(value: Any, kind: str = "s") -> str:
    if value is None:
        return "-"
    if kind == "%":
        return f"{100 * value:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(
    out: Path, spec: dict[str, Any], records: list[dict[str, Any]], machine: str
) -> dict[str, Any]:
    summary = summarize(records)
    report = {"run": spec, "machine": machine, "targets": summary, "ratios": ratios(summary)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# dgemma bench: suite `{spec['suite']}`",
        "",
        f"Machine: {machine}. Tasks per target: {max((s['tasks'] for s in summary.values()), default=0)}; "
        f"retries up to {spec['max_retries']} with new seeds.",
        "",
        "| target | accepted | first try | retry rate | latency p50 / p90 (s) | first output p50 / p90 (s) "
        "| tok/s p50 | tok/forward p50 | steps p50 | peak mem (MiB) | s per accepted |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, s in summary.items():
        lines.append(
            f"| {label} | {_fmt(s['acceptance_rate'], '%')} | {_fmt(s['first_try_acceptance_rate'], '%')} | "
            f"{_fmt(s['retry_rate'], '%')} | {_fmt(s['latency_median_s'])} / {_fmt(s['latency_p90_s'])} | "
            f"{_fmt(s['ttfo_median_s'])} / {_fmt(s['ttfo_p90_s'])} | {_fmt(s['tokens_per_s_median'])} | "
            f"{_fmt(s['tokens_per_forward_median'])} | {_fmt(s['denoising_steps_median'])} | "
            f"{_fmt(s['peak_mem_mib'])} | {_fmt(s['cost_per_accepted_s'])} |"
        )
    lines += ["", f"Side by side (against `{next(iter(summary), '-')}`):", ""]
    lines += [
        "| target | latency speed-up | first-output speed-up | acceptance difference |",
        "| --- | --- | --- | --- |",
    ]
    for label, r in report["ratios"].items():
        delta = r["acceptance_delta"]
        lines.append(
            f"| {label} | {_fmt(r['speedup_latency'], 'x')} | {_fmt(r['speedup_ttfo'], 'x')} | "
            f"{'-' if delta is None else f'{100 * delta:+.1f} points'} |"
        )
    lines += ["", "Plots: `latency.png` (latency per task, by target), `acceptance_vs_steps.png`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plots(out, records, summary)
    return report


def _plots(out: Path, records: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(summary)
    data = [[r["attempts"][0]["latency_s"] for r in records if group_label(r) == label] for label in labels]
    ax.boxplot(data, orientation="horizontal", showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set(xlabel="end-to-end latency per task, first attempt (s)", title="latency by target")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    by_target: dict[str, list[tuple[float, float]]] = {}
    for s in summary.values():
        if s["denoising_steps_median"] is not None:
            by_target.setdefault(s["target"], []).append((s["denoising_steps_median"], s["acceptance_rate"]))
    for target, pts in by_target.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=target)
    for s in summary.values():
        if s["denoising_steps_median"] is None:
            ax.axhline(s["acceptance_rate"], linestyle=":", color="gray")
            ax.annotate(s["target"], (0, s["acceptance_rate"]), fontsize=8, color="gray")
    ax.set(
        xlabel="median denoising steps per task", ylabel="acceptance rate", title="acceptance against steps"
    )
    ax.set_ylim(-0.02, 1.02)
    if by_target:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "acceptance_vs_steps.png", dpi=110)
    plt.close(fig)
