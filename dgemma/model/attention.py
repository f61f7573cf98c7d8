"""Attention over a slot-addressed KV store, and the per-pass plans that say what each query sees.

The store keeps, for every layer, keys and values of shape (R, S, Hkv, D): R request rows, S slots.
Row r holds its committed tokens in slots [0, L_r); slot index == position id. A pass writes its own
keys into the store first and then attends over a slot range, so one code path serves:

- the encoder (prompt prefill, canvas commit): causal, sliding layers see the last W positions
  (the reference's `sliding_window_causal_mask_function`), and L_r advances afterwards;
- the decoder (a denoising step): the canvas is written as scratch into [L_r, L_r + C), attended
  bidirectionally; sliding layers see the last W - 1 committed slots plus the whole canvas, which
  is what the reference's `DynamicSlidingWindowLayer` keeps (W - 1 tokens) and its decoder mask
  allows. L_r does not advance: the next commit overwrites the scratch.

Plans hold only index tensors and masks; they are built once per pass and shared by all layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.config import LayerSpec, ModelConfig
from dgemma.model.layers import RMSNorm, apply_rope, rms


@dataclass
class KVStore:
    """Per-layer key and value buffers, each (R, S, Hkv, D)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def num_rows(self) -> int:
        return self.keys[0].shape[0]

    @property
    def num_slots(self) -> int:
        return self.keys[0].shape[1]


@dataclass
class AttentionPlan:
    """Where one pass writes its keys and which slots each of its queries may read."""

    positions: torch.Tensor  # (b, T) position ids == slots
    rows: torch.Tensor | None  # (b,) store rows of this pass; None: all rows, in order
    write_index: torch.Tensor  # (N,) flat row * S + slot of each stored token
    write_source: torch.Tensor | None  # (N,) index into the b * T tokens; None: all of them
    ranges: dict[bool, tuple[int, int]]  # is_sliding -> slot range [start, end) read by the pass
    masks: dict[bool, torch.Tensor | None]  # is_sliding -> (b, 1, T, end - start) bool, None: all
    # the rotary tables of `positions` by dtype, filled by the model on first use: a plan reused by
    # the denoising steps of one canvas computes them once
    ropes: dict = field(default_factory=dict)


def _rows_or_arange(rows: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
    return torch.arange(b, device=device) if rows is None else rows


def encoder_plan(
    lengths: torch.Tensor,
    counts: torch.Tensor,
    num_tokens: int,
    window: int,
    num_slots: int,
    rows: torch.Tensor | None,
    blocks: torch.Tensor | None = None,
) -> AttentionPlan:
    """Causal pass over `counts[r]` new tokens per row (right-padded to `num_tokens`), after `lengths[r]`.

    `blocks` (b, T): a group id per new token (-1: none); tokens of one group also see each other
    ahead of them (the soft tokens of one image, under `use_bidirectional_attention: "vision"`)."""
    device = lengths.device
    b = lengths.shape[0]
    offsets = torch.arange(num_tokens, device=device)
    positions = lengths[:, None] + offsets  # (b, T)
    valid = offsets[None, :] < counts[:, None]
    row_ids = _rows_or_arange(rows, b, device)
    flat = row_ids[:, None] * num_slots + positions
    all_valid = bool(valid.all())
    write_source = None if all_valid else valid.reshape(-1).nonzero().squeeze(-1)
    write_index = flat.reshape(-1) if all_valid else flat.reshape(-1)[write_source]
    end = int((lengths + counts).max())
    ranges, masks = {}, {}
    for sliding in (False, True):
        start = max(0, int(lengths.min()) - window + 1) if sliding else 0
        keys = torch.arange(start, end, device=device)[None, None, None, :]
        q = positions[:, None, :, None]
        mask = keys <= q
        if sliding:
            mask = mask & (keys > q - window)
        if blocks is not None:
            mask = mask | _same_block(blocks, lengths, start, end)
        ranges[sliding], masks[sliding] = (start, end), mask
    return AttentionPlan(positions, rows, write_index, write_source, ranges, masks)


def _same_block(blocks: torch.Tensor, lengths: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """(b, 1, T, end - start): query and key slot are new tokens of one group."""
    b, T = blocks.shape
    offset = torch.arange(start, end, device=blocks.device)[None, :] - lengths[:, None]  # (b, K)
    inside = (offset >= 0) & (offset < T)
    key_blocks = torch.where(inside, blocks.gather(1, offset.clamp(0, T - 1)), -1)
    same = (blocks[:, :, None] == key_blocks[:, None, :]) & (blocks[:, :, None] >= 0)
    return same[:, None]


def decoder_plan(
    lengths: torch.Tensor, canvas_length: int, window: int, num_slots: int, rows: torch.Tensor | None
) -> AttentionPlan:
    """Bidirectional pass of a canvas written as scratch right after each row's committed slots."""
    device = lengths.device
    b = lengths.shape[0]
    positions = lengths[:, None] + torch.arange(canvas_length, device=device)
    row_ids = _rows_or_arange(rows, b, device)
    write_index = (row_ids[:, None] * num_slots + positions).reshape(-1)
    uniform = bool((lengths == lengths[0]).all())
    end = int(lengths.max()) + canvas_length
    ranges, masks = {}, {}
    for sliding in (False, True):
        lower = (lengths - (window - 1)).clamp(min=0) if sliding else torch.zeros_like(lengths)
        start = int(lower.min())
        ranges[sliding] = (start, end)
        if uniform:
            masks[sliding] = None
            continue
        keys = torch.arange(start, end, device=device)[None, :]
        mask = (keys >= lower[:, None]) & (keys < (lengths + canvas_length)[:, None])
        masks[sliding] = mask[:, None, None, :]
    return AttentionPlan(positions, rows, write_index, None, ranges, masks)


class Attention(nn.Module):
    """Grouped-query attention with q/k/v norms, scale 1.0, and values = keys where there is no v_proj."""

    def __init__(self, config: ModelConfig, spec: LayerSpec):
        super().__init__()
        self.is_sliding = spec.is_sliding
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = spec.num_kv_heads
        self.head_dim = spec.head_dim
        H, D, bias = config.hidden_size, spec.head_dim, config.attention_bias
        self.q_proj = nn.Linear(H, self.num_heads * D, bias=bias)
        self.k_proj = nn.Linear(H, self.num_kv_heads * D, bias=bias)
        self.v_proj = nn.Linear(H, self.num_kv_heads * D, bias=bias) if spec.has_v_proj else None
        self.o_proj = nn.Linear(self.num_heads * D, H, bias=bias)
        self.q_norm = RMSNorm(D, config.rms_norm_eps)
        self.k_norm = RMSNorm(D, config.rms_norm_eps)
        self.v_norm = RMSNorm(D, config.rms_norm_eps, with_scale=False)

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (b, Hq, T, D) and k, v (b, T, Hkv, D): projected, normed, q and k rotated."""
        b, T, _ = x.shape
        D, nq, nk = self.head_dim, self.num_heads, self.num_kv_heads
        q = self.q_proj.forward(x).view(b, T, nq, D)  # .forward: no module-call hooks per layer
        k = self.k_proj.forward(x).view(b, T, nk, D)
        v = k if self.v_proj is None else self.v_proj.forward(x).view(b, T, nk, D)
        # q, k and v heads share one norm call (per-head weights; v has none) and q, k one rotation
        normed = self._head_norms(torch.cat([q, k, v], dim=2), nq, nk)
        qk = apply_rope(normed[:, :, : nq + nk], cos, sin)
        return qk[:, :, :nq].transpose(1, 2), qk[:, :, nq:], normed[:, :, nq + nk :]

    def attend(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention of q (b, Hq, T, D) over keys/values (b, Hkv, K, D), then the output projection."""
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0, enable_gqa=True)
        b, _, T, _ = q.shape
        return self.o_proj.forward(out.transpose(1, 2).reshape(b, T, -1))

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        store_k: torch.Tensor,
        store_v: torch.Tensor,
        plan: AttentionPlan,
    ) -> torch.Tensor:
        """Inference: write this pass's keys and values into the store, then attend as the plan says."""
        q, k, v = self.project(x, cos, sin)
        self._store(store_k, k, plan)
        self._store(store_v, v, plan)
        return self.attend(
            q, self._read(store_k, plan), self._read(store_v, plan), plan.masks[self.is_sliding]
        )

    def forward_context(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Differentiable, cache-free: attend over `context` keys/values (b, K, Hkv, D) then this pass's own.

        Returns the output and this pass's (k, v), which a later pass may use as its context.
        """
        q, k, v = self.project(x, cos, sin)
        keys, values = (
            (k, v) if context is None else (torch.cat([context[0], k], 1), torch.cat([context[1], v], 1))
        )
        return self.attend(q, keys.transpose(1, 2), values.transpose(1, 2), mask), (k, v)

    def _head_norms(self, qkv: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
        """q_norm, k_norm and v_norm over (b, T, nq + 2 nk, D) heads, in float32 like `RMSNorm`."""
        normed = rms(qkv, self.q_norm.eps)
        if torch.is_grad_enabled():  # autograd: no in-place writes into the norm's output
            D = qkv.shape[-1]
            ones = torch.ones(nk, D, dtype=normed.dtype, device=normed.device)
            weight = torch.cat([self.q_norm.weight.expand(nq, D), self.k_norm.weight.expand(nk, D), ones])
            return (normed * weight.float()).to(qkv.dtype)
        # the same products, written over the q and k heads (v's norm has no weight)
        normed[:, :, :nq].mul_(self.q_norm.weight.float())
        normed[:, :, nq : nq + nk].mul_(self.k_norm.weight.float())
        return normed.to(qkv.dtype)

    @staticmethod
    def _store(store: torch.Tensor, new: torch.Tensor, plan: AttentionPlan) -> None:
        src = new.reshape(-1, *new.shape[2:])
        if plan.write_source is not None:
            src = src[plan.write_source]
        store.view(-1, *store.shape[2:]).index_copy_(0, plan.write_index, src)

    def _read(self, store: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        start, end = plan.ranges[self.is_sliding]
        window = store[:, start:end]
        if plan.rows is not None:
            window = window.index_select(0, plan.rows)
        return window.transpose(1, 2)  # (b, Hkv, K, D)
