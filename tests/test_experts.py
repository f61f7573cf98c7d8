"""The routed experts' three paths (grouped GEMM, dense, per-expert loop) compute the same thing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dgemma.model.layers import Experts, grouped_mm_supported


def _experts(num_experts: int = 6, hidden: int = 16, inner: int = 8) -> Experts:
    config = SimpleNamespace(  # the fields Experts reads
        hidden_size=hidden,
        num_experts=num_experts,
        moe_intermediate_size=inner,
        hidden_activation="gelu_pytorch_tanh",
        canvas_length=8,
    )
    torch.manual_seed(0)
    experts = Experts(config)
    torch.nn.init.normal_(experts.gate_up_proj, std=0.3)
    torch.nn.init.normal_(experts.down_proj, std=0.3)
    return experts


def _routing(tokens: int, num_experts: int, used: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-2 ids drawn from the first `used` experts only, so the others get no tokens."""
    ids = torch.stack([torch.randperm(used)[:2] for _ in range(tokens)])
    return torch.softmax(torch.randn(tokens, 2), dim=-1), ids


@pytest.mark.skipif(not grouped_mm_supported(torch.zeros(1), torch.zeros(1)), reason="no torch._grouped_mm")
@pytest.mark.parametrize("used", [6, 3])
def test_grouped_gemm_path_equals_the_loop_forward_and_backward(used: int) -> None:
    experts = _experts()
    x = torch.randn(20, 16, requires_grad=True)
    weights, ids = _routing(20, 6, used)
    target = torch.randn(20, 16)
    results = []
    for path in (experts._sorted, experts._grouped):
        x.grad = None
        experts.zero_grad()
        out = path(x, weights, ids, *experts.banks(x.dtype))
        (out * target).sum().backward()
        results.append(
            (out.detach(), x.grad.clone(), experts.gate_up_proj.grad.clone(), experts.down_proj.grad.clone())
        )
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(
            experts._dense(x, weights, ids, *experts.banks(x.dtype)), results[0][0], rtol=1e-5, atol=1e-6
        )


def test_forward_takes_the_grouped_gemm_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    experts = _experts()
    calls = []
    monkeypatch.setattr(experts, "_grouped", lambda *a: calls.append("loop"))
    monkeypatch.setattr(experts, "_dense", lambda *a: calls.append("dense"))
    weights, ids = _routing(4, 6, 6)
    with torch.no_grad():
        out = experts(torch.randn(4, 16), weights, ids)
    assert calls == [] and out.shape == (4, 16)
