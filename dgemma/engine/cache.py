"""The KV cache of a batch of requests: allocated once, addressed by (row, slot), lengths per row.

Each row owns `capacity` slots for its whole life: the prompt, every committed canvas, and the scratch
canvas that the decoder writes after the committed slots. Nothing is concatenated or reallocated
while a request runs; a finished row's slots are simply no longer read.
"""

from __future__ import annotations

import torch

from dgemma.config import ModelConfig
from dgemma.model import AttentionPlan, KVStore


class KVCache:
    def __init__(
        self, config: ModelConfig, num_rows: int, capacity: int, dtype: torch.dtype, device: torch.device
    ):
        keys, values = [], []
        for spec in config.layers:
            shape = (num_rows, capacity, spec.num_kv_heads, spec.head_dim)
            # zero-filled: slots a row has not written are masked, but must never hold NaN
            keys.append(torch.zeros(shape, dtype=dtype, device=device))
            values.append(torch.zeros(shape, dtype=dtype, device=device))
        self.store = KVStore(keys, values)
        self.lengths = torch.zeros(num_rows, dtype=torch.long, device=device)
        self.capacity = capacity
        # the last decoder pass's (key, plan): the denoising steps of a canvas share one plan
        self.decoder_plan: tuple[tuple, AttentionPlan] | None = None

    @property
    def num_rows(self) -> int:
        return self.store.num_rows

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.keys + self.store.values)
