"""Server metrics in the Prometheus text exposition format (counters, gauges, histograms), thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped, strict=True)) + "}"


class Counter:
    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items()) or [((), 0.0)]
        lines += [f"{self.name}{_labels(k)} {v:g}" for k, v in items]
        return lines


class Gauge:
    """A value read when scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]):
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.read():g}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, buckets
        self._counts = [0] * len(buckets)
        self._sum, self._count = 0.0, 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
            self._sum += value
            self._count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for bound, count in zip(self.buckets, self._counts, strict=True):
                lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {count}')
            lines.append(f'{self.name}_bucket{{le="+Inf"}} {self._count}')
            lines.append(f"{self.name}_sum {self._sum:g}")
            lines.append(f"{self.name}_count {self._count}")
        return lines


class ServerMetrics:
    """Everything /metrics reports; the engine worker and the HTTP handlers update it."""

    def __init__(self, queue_depth: Callable[[], float], active_rows: Callable[[], float]):
        self.requests = Counter("dgemma_requests_total", "HTTP requests answered, by endpoint and status")
        self.prompt_tokens = Counter("dgemma_prompt_tokens_total", "prompt tokens prefilled")
        self.generated_tokens = Counter("dgemma_generated_tokens_total", "tokens committed")
        self.denoising_steps = Counter("dgemma_denoising_steps_total", "decoder passes run per row")
        self.canvases = Counter("dgemma_canvases_total", "canvases committed")
        self.latency = Histogram("dgemma_request_latency_seconds", "time from arrival to the last token")
        self.first_canvas = Histogram(
            "dgemma_time_to_first_canvas_seconds", "time from arrival to the first committed canvas"
        )
        self._gauges = [
            Gauge("dgemma_queue_depth", "requests waiting for a cache row", queue_depth),
            Gauge("dgemma_active_rows", "requests holding a cache row", active_rows),
            Gauge(
                "dgemma_tokens_per_forward",
                "committed tokens per forward pass (denoising steps plus one encoder pass per canvas), since start",
                self._tpf,
            ),
        ]

    def _tpf(self) -> float:
        steps = self.denoising_steps.value()
        return self.generated_tokens.value() / (steps + self.canvases.value()) if steps else 0.0

    def render(self) -> str:
        parts = [
            self.requests,
            self.prompt_tokens,
            self.generated_tokens,
            self.denoising_steps,
            self.canvases,
        ]
        lines: list[str] = []
        for metric in [*parts, *self._gauges, self.latency, self.first_canvas]:
            lines += metric.render()
        return "\n".join(lines) + "\n"
