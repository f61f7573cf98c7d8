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
from dgemma.engine.logprobs import token_logprobs
from dgemma.engine.passes import encode_rows
from dgemma.engine.request import Request, check_fits
from dgemma.engine.results import Completion, FinishReason, Phase, RowStats, TokenLogprob
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
    logprobs: list[list[TokenLogprob]] = [[] for _ in requests]

    active = list(range(len(requests)))
    feed = [r.prompt for r in requests]
    phase = Phase.PREFILL
    while active:
        start = time.perf_counter()
        with torch.inference_mode():  # per step, never across a yield
            images = [requests[r].images for r in active] if phase is Phase.PREFILL else None
            hidden, counts = encode_rows(model, cache, active, feed, images)
            last = hidden[torch.arange(len(active), device=device), counts - 1]  # (b, H)
            logits = model.logits(last)
            picked = [
                pick_token(logits[i], requests[r].temperature, generators[r]) for i, r in enumerate(active)
            ]
            scored = [
                _logprob(logits[i], tok, requests[r])
                for i, (r, tok) in enumerate(zip(active, picked, strict=True))
            ]
        elapsed = time.perf_counter() - start
        events = []
        for r, tok, lp in zip(active, picked, scored, strict=True):
            setattr(stats[r], phase, getattr(stats[r], phase) + elapsed)
            stats[r].encoder_passes += 1
            if tok in requests[r].eos_token_ids:
                finish[r] = FinishReason.STOP
                continue
            tokens[r].append(tok)
            if lp is not None:
                logprobs[r].append(lp)
            stats[r].num_tokens = len(tokens[r])
            events.append(CommitEvent(r, len(tokens[r]) - 1, [tok], 1, None if lp is None else [lp]))
            if len(tokens[r]) >= requests[r].max_new_tokens:
                finish[r] = FinishReason.LENGTH
        yield from events
        active = [r for r in active if finish[r] is None]
        feed = [[tokens[r][-1]] for r in active]
        phase = Phase.COMMIT
    yield DoneEvent(
        [
            Completion(t, f, s, lp if r.logprobs is not None else None)
            for t, f, s, lp, r in zip(tokens, finish, stats, logprobs, requests, strict=True)
        ]
    )


def _logprob(logits: torch.Tensor, token: int, request: Request) -> TokenLogprob | None:
    """The picked token's log-probability under the distribution it was picked from: softmax at
    the request's temperature (the raw logits when greedy)."""
    if request.logprobs is None:
        return None
    scale = request.temperature if request.temperature > 0 else 1.0
    probs = torch.softmax(logits / scale, dim=-1, dtype=torch.float32)
    (lp,) = token_logprobs(probs[None], torch.tensor([token], device=probs.device), request.logprobs)
    return lp
