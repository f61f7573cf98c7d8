"""Log-probabilities reported with tokens: of a generated canvas, and of a prompt under the encoder."""

from __future__ import annotations

import torch

from dgemma.engine.results import TokenLogprob


def token_logprobs(probs: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """probs (C, V) float32, tokens (C,): each token's log-probability and the `top` most likely
    (probabilities are read, then logged: the order is the same, and nothing vocabulary-sized is made)."""
    chosen = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).log()
    values, ids = probs.topk(top, dim=-1) if top else (None, None)
    return _pack(chosen, ids, None if values is None else values.log())


def prompt_logprobs(logits: torch.Tensor, ids: list[int], top: int) -> list[TokenLogprob | None]:
    """Causal logits (T, V) of a prompt `ids` (T tokens): token t's log-probability given the tokens
    before it (log-softmax of the logits at t - 1); None for the first token, which has no context."""
    if len(ids) < 2:
        return [None] * len(ids)
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    target = torch.as_tensor(ids[1:], device=logits.device)
    chosen = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    values, top_ids = logprobs.topk(top, dim=-1) if top else (None, None)
    return [None, *_pack(chosen, top_ids, values)]


def _pack(chosen: torch.Tensor, ids: torch.Tensor | None, values: torch.Tensor | None) -> list[TokenLogprob]:
    if ids is None or values is None:
        return [TokenLogprob(lp) for lp in chosen.tolist()]
    return [
        TokenLogprob(lp, tuple(zip(i, v, strict=True)))
        for lp, i, v in zip(chosen.tolist(), ids.tolist(), values.tolist(), strict=True)
    ]
