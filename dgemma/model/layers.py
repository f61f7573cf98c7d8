"""Small modules of the DiffusionGemma text stack: norm, rotary tables, dense MLP, router and experts.

Numerics follow the reference (transformers 5.23.0, `modeling_diffusion_gemma.py`): norms run in
float32 and multiply by `weight` (not `1 + weight`), the router softmax runs in float32, and expert
outputs are accumulated in ascending expert order so sums round the same way.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

from dgemma.config import ModelConfig, RopeSpec, RopeType


def activation(name: str):
    """The MLP activation named in the config."""
    if name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}[name]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 whatever the input dtype."""

    def __init__(self, dim: int, eps: float, with_scale: bool = True):
        super().__init__()
        self.eps = eps
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim)) if with_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused kernel; same math as the upcast path below
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)
        weight = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), (self.dim,), weight, self.eps).to(x.dtype)


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) in float32 (no weight): the shared core of every norm here."""
    return F.rms_norm(x.float(), (x.shape[-1],), None, eps)


def rope_inv_freq(spec: RopeSpec, head_dim: int) -> torch.Tensor:
    """Inverse frequencies, length head_dim // 2; proportional RoPE leaves the tail unrotated (zeros)."""
    if spec.rope_type is RopeType.DEFAULT:
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim
        return 1.0 / (spec.theta**exponents) / spec.factor
    rotated = int(spec.partial_rotary_factor * head_dim // 2)
    exponents = torch.arange(0, 2 * rotated, 2, dtype=torch.int64).float() / head_dim
    inv = 1.0 / (spec.theta**exponents)
    inv = torch.cat([inv, torch.zeros(head_dim // 2 - rotated)])
    return inv / spec.factor


def rope_tables(
    inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of shape (B, T, D) for integer positions (B, T).

    The sin table's first half is negated: rotating half the dimensions is then a roll of x times
    this table (see `apply_rope`), with the same products and sums as negating half of x.
    """
    freqs = positions[..., None].float() * inv_freq.float()
    cos, sin = freqs.cos(), freqs.sin()
    return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, T, H, D) by tables (B, T, D) from `rope_tables`, pairing dimension i with i + D/2:
    x * cos + (-x[D/2:], x[:D/2]) * sin, bit for bit, with the sign carried by the table."""
    return x * cos.unsqueeze(2) + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin.unsqueeze(2)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): the shared dense MLP and the self-conditioning block."""

    def __init__(self, hidden: int, intermediate: int, act_name: str):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = activation(act_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Softmax top-k routing with renormalised weights and a learned per-expert scale."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k = config.top_k_experts
        self.root_size = config.hidden_size**-0.5
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, with_scale=False)
        self.proj = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(config.hidden_size))
        self.per_expert_scale = nn.Parameter(torch.ones(config.num_experts))

    def forward(
        self, x: torch.Tensor, normed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, H) -> weights (N, K) float32, expert ids (N, K); `normed` may pass rms(x) in float32.

        The reference's order of operations, bit for bit: softmax over all experts, top-k of the
        probabilities, renormalised by their sum. (A softmax over the top-k scores alone is the
        same function, but rounds 1 ulp differently, and that difference grew to 1e-4 in the
        logits of a 6-layer net.)
        """
        h = (rms(x, self.norm.eps) if normed is None else normed).to(x.dtype)
        scores = F.linear(h * self.scale * self.root_size, self.proj.weight)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        top, ids = torch.topk(probs, k=self.top_k, dim=-1)
        weights = top / top.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[ids], ids


# Where `torch._grouped_mm` is not available (CUDA float32, older GPUs), small expert banks run
# every expert on every token in one batched GEMM pair: below this many multiply-adds per canvas
# (canvas length x all experts' cost per token) that beats dispatching tokens expert by expert,
# whose per-expert launches cost more than the wasted math. The choice depends on the model alone,
# never on the batch. Training (autograd on) always dispatches: its token counts are large.
DENSE_EXPERTS_MAX_MACS_PER_CANVAS = 12_000_000
DENSE_COMPILED_MAX_WASTE = 4  # experts per routed expert up to which a compiled graph runs them all


_REFERENCE_NUMERICS = contextvars.ContextVar("dgemma_reference_numerics", default=False)


@contextlib.contextmanager
def reference_numerics(on: bool = True):
    """Inside it, passes round as the reference does where a faster path of dgemma's rounds
    differently: the routed experts on a CPU take the reference's grouped GEMM order instead of the
    padded blocks. The sampler's reference draws run their passes under it."""
    token = _REFERENCE_NUMERICS.set(on)
    try:
        yield
    finally:
        _REFERENCE_NUMERICS.reset(token)


TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def grouped_mm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` runs these operands: the eager CPU kernel takes any float dtype
    (torch 2.11+); the CUDA kernel and torch.compile's lowering bfloat16 only (CUDA: compute
    capability 9.0+, rows 16-byte aligned)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False
    if x.device.type == "cpu":  # the CPU kernel: torch 2.9+, unaligned operands from 2.11
        return TORCH_VERSION >= (2, 11)
    if x.device.type != "cuda" or x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16:
        return False
    return (
        torch.cuda.get_device_capability(x.device)[0] >= 9
        and weight.shape[-1] % 8 == 0
        and weight.shape[-2] % 8 == 0
    )


class Experts(nn.Module):
    """Routed experts stored packed: gate_up_proj (E, 2I, H), down_proj (E, H, I)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E, H, F_ = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * F_, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, F_))
        self.act = activation(config.hidden_activation)
        self.dense_inference = config.canvas_length * E * 3 * F_ * H <= DENSE_EXPERTS_MAX_MACS_PER_CANVAS
        # compiled without grouped_mm: every expert on every token costs E / K times the routed
        # products but no host read, which would break the graph (dynamo then runs the whole
        # decoder loop eagerly); taken up to 4x the products
        self.dense_compiled = E <= DENSE_COMPILED_MAX_WASTE * config.top_k_experts

    def banks(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The (gate_up, down) weight banks to compute with (quantized experts: dequantized here)."""
        return self.gate_up_proj, self.down_proj

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x (N, H), weights/ids (N, K) -> (N, H)."""
        gate_up, down = self.banks(x.dtype)
        compiling = torch.compiler.is_compiling()
        fast_cpu = x.device.type == "cpu" and not torch.is_grad_enabled() and not compiling
        if fast_cpu and not _REFERENCE_NUMERICS.get():
            out = self._padded(x, weights, ids, gate_up, down)
            if out is not None:
                return out
        if grouped_mm_supported(x, gate_up):
            return self._sorted(x, weights, ids, gate_up, down)
        if (compiling and self.dense_compiled) or (self.dense_inference and not torch.is_grad_enabled()):
            return self._dense(x, weights, ids, gate_up, down)
        return self._grouped(x, weights, ids, gate_up, down)

    def _dense(self, x, weights, ids, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """Every expert on every token; routing weights of unselected experts are zero."""
        gate, up = torch.matmul(x, gate_up.transpose(1, 2)).chunk(2, dim=-1)  # (E, N, I) each
        y = torch.matmul(self.act(gate) * up, down.transpose(1, 2))  # (E, N, H)
        dense_w = torch.zeros(x.shape[0], gate_up.shape[0], dtype=weights.dtype, device=x.device)
        dense_w.scatter_(1, ids, weights)  # (N, E) float32
        return torch.einsum("ne,enh->nh", dense_w, y.float()).to(x.dtype)

    def _padded(self, x, weights, ids, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor | None:
        """Each expert's tokens gathered into a (E, cap) block, one batched GEMM pair, results read
        back in top-k order; None where padding to the busiest expert would over double the work.

        CPU inference: the capacity is one host read, which costs nothing there, and on the issue-15
        shapes one batched GEMM of E equal blocks runs about twice as fast as `_grouped_mm`'s small
        GEMM per expert (the whole layer's experts ~25% faster). The products are the grouped
        path's; the GEMM kernels may round them differently (1 ulp).
        """
        N, K = ids.shape
        E = gate_up.shape[0]
        if N * K == 0:
            return None
        flat = ids.reshape(-1)
        # rank of each assignment among its expert's, in token order (the sorted path's order)
        rank = F.one_hot(flat, E).cumsum(0).gather(1, flat[:, None]).squeeze(1) - 1
        cap = int(rank.max()) + 1
        if E * cap > 2 * N * K:
            return None
        slot = flat * cap + rank  # where each assignment sits in the (E * cap) blocks
        token = torch.zeros(E * cap, dtype=torch.long, device=x.device)  # padding rows read token 0
        token.index_put_((slot,), torch.arange(N * K, device=x.device) // K)
        gate, up = torch.bmm(x[token].view(E, cap, -1), gate_up.transpose(1, 2)).chunk(2, dim=-1)
        h = torch.bmm(self.act(gate) * up, down.transpose(1, 2)).view(E * cap, -1)
        out = (h[slot].view(N, K, -1).float() * weights.unsqueeze(-1)).sum(dim=1)
        return out.to(x.dtype)

    def _sorted(self, x, weights, ids, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """Assignments sorted by expert, one grouped GEMM pair over all experts, no host sync.

        The per-expert offsets stay on the device; each result is scaled by its routing weight,
        put back in top-k order and summed there. The order of the sort and of these steps is the
        reference's: with it the float32 experts of the issue-15 config round bit for bit as the
        reference's do (a stable sort, or the weights applied after the reordering, differ by 1 ulp).
        """
        N, K = ids.shape
        flat_ids = ids.reshape(-1)
        order = torch.sort(flat_ids).indices
        offsets = torch.bincount(flat_ids, minlength=gate_up.shape[0]).cumsum(0).to(torch.int32)
        gate, up = torch._grouped_mm(x[order // K], gate_up.transpose(1, 2), offs=offsets).chunk(2, -1)
        h = torch._grouped_mm(self.act(gate) * up, down.transpose(1, 2), offs=offsets)
        scaled = h.float() * weights.reshape(-1)[order].unsqueeze(-1)
        per_assignment = torch.empty_like(scaled).index_copy_(0, order, scaled)
        return per_assignment.view(N, K, -1).sum(dim=1).to(x.dtype)

    def _grouped(self, x, weights, ids, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """Tokens grouped by expert, one GEMM pair per expert hit, summed in ascending expert order."""
        N, K = ids.shape
        flat_ids = ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=gate_up.shape[0]).tolist()
        token_of = order // K  # (N*K,) token index of each sorted assignment
        weight_of = weights.reshape(-1)[order]
        out = torch.zeros_like(x)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            tokens = token_of[start : start + count]
            gate, up = F.linear(x[tokens], gate_up[expert]).chunk(2, dim=-1)
            h = F.linear(self.act(gate) * up, down[expert])
            out.index_add_(0, tokens, (h * weight_of[start : start + count, None]).to(out.dtype))
            start += count
        return out
