"""Targets: what a benchmark runs a task on, each measured the same way.

    local            the dgemma engine, block diffusion (infill tasks through Model.infill,
                     json_schema tasks constrained)
    local:ar         next-token decoding on the same weights (greedy)
    local@DIR, local:ar@DIR   the same with another checkpoint (e.g. an AR-trained baseline)
    hf, hf@DIR       transformers' reference DiffusionGemmaForBlockDiffusion.generate
    openai:URL#MODEL any OpenAI-compatible endpoint (a dgemma or vLLM server), streamed

AR, hf and openai targets get infill tasks as a text prompt and json_schema tasks unconstrained
(openai: as response_format json_schema), since they cannot clamp canvas positions.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from dgemma.api import Model, load
from dgemma.engine.events import CommitEvent, DoneEvent
from dgemma.generation.infill import AUTO_LENGTHS
from dgemma.harness.suites import Task


@dataclass
class Attempt:
    seed: int
    text: str
    latency_s: float
    ttfo_s: float  # time to first output: first committed canvas (diffusion) or first token
    tokens: int
    steps: int | None = None  # decoder passes (diffusion)
    peak_mem_mib: float | None = None  # local targets: process peak RSS (CPU) or CUDA peak allocation
    error: str | None = None
    accepted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryWatch:
    """Peak memory during a block: CUDA peak allocation, or the process RSS sampled every 5 ms."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> MemoryWatch:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page / 2**20)
            if self._stop.wait(0.005):
                return

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


class LocalTarget:
    def __init__(self, model: Model, mode: str, label: str):
        self.model, self.mode, self.label = model, mode, label

    def run(self, task: Task, seed: int, settings: dict[str, Any]) -> Attempt:
        sampler = {**task.settings, **settings} if self.mode == "diffusion" else {}
        start = time.perf_counter()
        with MemoryWatch(self.model.model.device) as mem:
            text, tokens, steps, first = self._generate(task, seed, sampler, start)
        latency = time.perf_counter() - start
        return Attempt(seed, text, latency, latency if first is None else first, tokens, steps, mem.peak)

    def _generate(
        self, task: Task, seed: int, sampler: dict, start: float
    ) -> tuple[str, int, int | None, float | None]:
        """(text, tokens, decoder passes or None, seconds to the first committed output or None)."""
        m = self.model
        if self.mode == "diffusion" and task.infill is not None:
            limit = task.max_tokens or max(AUTO_LENGTHS)
            lengths = tuple(n for n in AUTO_LENGTHS if n <= limit) or (limit,)
            r = m.infill(
                task.infill["prefix"], task.infill["suffix"], "auto", seed=seed, candidates=lengths, **sampler
            )
            return r.fill, r.length, None, None
        if self.mode == "diffusion" and task.json_schema is not None:
            out = m.generate(_prompt(task), json_schema=task.json_schema, seed=seed, raw=task.raw, **sampler)
            return out.texts[0], out.stats[0].num_tokens, out.stats[0].decoder_passes, None
        first, done = None, None
        events = m.stream(
            _prompt(task),
            mode=self.mode,
            drafts=False,
            max_new_tokens=task.max_tokens,
            seed=seed,
            raw=task.raw,
            **sampler,
        )
        for event in events:
            if isinstance(event, CommitEvent) and first is None and event.tokens:
                first = time.perf_counter() - start
            elif isinstance(event, DoneEvent):
                done = event
        c = done.completions[0]
        steps = c.stats.decoder_passes if self.mode == "diffusion" else None
        return (m.codec.decode(c.token_ids) if m.codec else ""), len(c.token_ids), steps, first


def _prompt(task: Task) -> Any:
    if task.prompt_ids is not None:
        return task.prompt_ids
    if task.messages is not None:
        return task.messages
    return task.text_prompt()


class HfTarget:
    """The transformers reference (test dependency); tokenization through dgemma's codec, same prompts."""

    def __init__(self, directory: Path, label: str):
        try:
            from transformers import DiffusionGemmaForBlockDiffusion
        except ImportError:
            raise ValueError("target 'hf' needs transformers (pip install transformers==5.23.0)") from None
        self.ref = DiffusionGemmaForBlockDiffusion.from_pretrained(directory, dtype=torch.float32).eval()
        self.model, self.label = load(directory), label

    def run(self, task: Task, seed: int, settings: dict[str, Any]) -> Attempt:
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

        m = self.model
        sampler = m.sampler_defaults.replace(**{**task.settings, **settings})
        prompt = m.tokenize([_prompt(task)], raw=task.raw)[0]
        max_new = task.max_tokens or m.defaults.max_new_tokens
        eos = list(m.defaults.eos_token_ids)
        torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.ref.generate(
                torch.tensor([prompt]),
                max_new_tokens=max_new,
                eos_token_id=eos or None,
                pad_token_id=m.defaults.pad_token_id or 0,
                sampler_config=EntropyBoundSamplerConfig(entropy_bound=sampler.entropy_bound),
                max_denoising_steps=sampler.max_denoising_steps,
                t_min=sampler.t_min,
                t_max=sampler.t_max,
                stability_threshold=sampler.stability_threshold,
                confidence_threshold=sampler.confidence_threshold,
            )
        latency = time.perf_counter() - start
        tokens = out.sequences[0, len(prompt) :].tolist()
        end = next((i for i, t in enumerate(tokens) if t in eos), len(tokens))
        tokens = tokens[: min(end, max_new)]
        return Attempt(seed, m.codec.decode(tokens) if m.codec else "", latency, latency, len(tokens))


class OpenAITarget:
    """An OpenAI-compatible endpoint: chat (or completions for raw prompts and token ids), streamed."""

    def __init__(self, spec: str, label: str):
        url, _, self.model_name = spec.partition("#")
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not self.model_name:
            raise ValueError(f"target {label!r}: use openai:http://HOST:PORT/v1#MODEL")
        self.parts, self.label = parts, label
        self.api_key = os.environ.get("OPENAI_API_KEY", "unused")

    def run(self, task: Task, seed: int, settings: dict[str, Any]) -> Attempt:
        body: dict[str, Any] = {
            "model": self.model_name,
            "seed": seed,
            "stream": True,
            **task.settings,
            **settings,
        }
        body["stream_options"] = {"include_usage": True}
        if task.max_tokens:
            body["max_tokens"] = task.max_tokens
        if task.prompt_ids is not None or (task.raw and task.infill is None):
            path, body["prompt"] = "/completions", task.prompt_ids or task.prompt
        else:
            path = "/chat/completions"
            body["messages"] = task.messages or [{"role": "user", "content": task.text_prompt()}]
            if task.json_schema is not None:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "task", "schema": task.json_schema},
                }
                body.pop("max_tokens", None)
        cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.parts.hostname, self.parts.port, timeout=600)
        start, first, text, usage = time.perf_counter(), None, "", {}
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
            conn.request("POST", self.parts.path.rstrip("/") + path, json.dumps(body), headers)
            resp = conn.getresponse()
            if resp.status != 200:
                message = resp.read().decode(errors="replace")[:300]
                return Attempt(
                    seed, "", time.perf_counter() - start, 0.0, 0, error=f"HTTP {resp.status}: {message}"
                )
            for line in resp:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Attempt(
                        seed, text, time.perf_counter() - start, 0.0, 0, error=str(chunk["error"])[:300]
                    )
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if piece and first is None:
                        first = time.perf_counter() - start
                    text += piece
        except OSError as err:
            return Attempt(
                seed, text, time.perf_counter() - start, 0.0, 0, error=f"{type(err).__name__}: {err}"
            )
        finally:
            conn.close()
        latency = time.perf_counter() - start
        tokens = usage.get("completion_tokens", 0)
        return Attempt(
            seed, text, latency, latency if first is None else first, tokens, usage.get("denoising_steps")
        )


def make_target(spec: str, default_model: Path):
    """A target from its command-line spec (see the module docstring)."""
    if spec.startswith("openai:"):
        return OpenAITarget(spec.removeprefix("openai:"), spec)
    name, _, directory = spec.partition("@")
    path = Path(directory) if directory else default_model
    if name in ("local", "local:ar"):
        return LocalTarget(load(path), "ar" if name == "local:ar" else "diffusion", spec)
    if name == "hf":
        return HfTarget(path, spec)
    raise ValueError(f"unknown target {spec!r}: use local, local:ar, local@DIR, hf, or openai:URL#MODEL")
