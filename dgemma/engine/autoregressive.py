"""The autoregressive baseline on the same weights: next-token decoding through the causal encoder.

    prefill every prompt (one ragged encoder pass); logits at each row's last prompt token
    repeat: pick a token per unfinished row (greedy, or sampled at `temperature`),
            stop rows at EOS / max_new_tokens, encode the new tokens of the others

This is what users compare diffusion against: one forward pass per generated token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from dgemma.engine.cache import KVCache
from dgemma.engine.events import CommitEvent, DoneEvent, Event
from dgemma.engine.passes import encode_rows
from dgemma.engine.request import Request, check_fits
from dgemma.engine.results import Completion, FinishReason, Phase, RowStats
from dgemma.model import DiffusionGemma


def pick_token(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else a sample from softmax(logits / temperature); logits (V,)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1, dtype=torch.float32)
    return int(torch.multinomial(probs, 1, generator=generator))


def run_autoregressive(model: DiffusionGemma, requests: list[Request]) -> Iterator[Event]:
    """Generate token by token for every request; yields a Commit event per token, then Done."""
    config, device = model.config, model.device
    if any(r.fixed or r.allowed for r in requests):
        raise ValueError("canvas constraints (fixed or allowed tokens) need diffusion mode, not mode 'ar'")
    capacity = check_fits(requests, config, lambda r: len(r.prompt) + r.max_new_tokens)
    cache = KVCache(config, len(requests), capacity, model.dtype, device)
    generators = [r.generator(device) for r in requests]
    tokens: list[list[int]] = [[] for _ in requests]
    stats = [RowStats() for _ in requests]
    finish: list[FinishReason | None] = [None] * len(requests)

    active = list(range(len(requests)))
    feed = [r.prompt for r in requests]
    phase = Phase.PREFILL
    while active:
        start = time.perf_counter()
        with torch.inference_mode():  # per step, never across a yield
            hidden, counts = encode_rows(model, cache, active, feed)
            last = hidden[torch.arange(len(active), device=device), counts - 1]  # (b, H)
            logits = model.logits(last)
            picked = [
                pick_token(logits[i], requests[r].temperature, generators[r]) for i, r in enumerate(active)
            ]
        elapsed = time.perf_counter() - start
        events = []
        for r, tok in zip(active, picked, strict=True):
            setattr(stats[r], phase, getattr(stats[r], phase) + elapsed)
            stats[r].encoder_passes += 1
            if tok in requests[r].eos_token_ids:
                finish[r] = FinishReason.STOP
                continue
            tokens[r].append(tok)
            stats[r].num_tokens = len(tokens[r])
            events.append(CommitEvent(r, len(tokens[r]) - 1, [tok], 1))
            if len(tokens[r]) >= requests[r].max_new_tokens:
                finish[r] = FinishReason.LENGTH
        yield from events
        active = [r for r in active if finish[r] is None]
        feed = [[tokens[r][-1]] for r in active]
        phase = Phase.COMMIT
    yield DoneEvent([Completion(t, f, s) for t, f, s in zip(tokens, finish, stats, strict=True)])
