"""The routed experts' paths (padded batched GEMM, grouped GEMM, dense, per-expert loop) compute the same thing."""

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
        top_k_experts=2,
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


@pytest.mark.parametrize("used", [6, 4])
def test_padded_path_equals_the_loop(used: int) -> None:
    experts = _experts()
    x = torch.randn(30, 16)
    weights, ids = _routing(30, 6, used)
    with torch.no_grad():
        padded = experts._padded(x, weights, ids, *experts.banks(x.dtype))
        loop = experts._grouped(x, weights, ids, *experts.banks(x.dtype))
    assert padded is not None
    torch.testing.assert_close(padded, loop, rtol=1e-5, atol=1e-6)


def test_padded_path_declines_a_lopsided_routing() -> None:
    """Padding every expert to the busiest one's count would do more than twice the work."""
    experts = _experts()
    ids = torch.tensor([[0, 1]] * 12 + [[2, 3]])  # experts 0 and 1 take 12 tokens, 2 and 3 one
    weights = torch.full((13, 2), 0.5)
    with torch.no_grad():
        assert experts._padded(torch.randn(13, 16), weights, ids, *experts.banks(torch.float32)) is None


def test_forward_paths_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference takes the padded GEMM, and the grouped GEMM where padding declines; autograd the
    grouped GEMM; never the dense path or the loop while grouped_mm runs."""
    experts = _experts()
    calls = []
    for name in ("_padded", "_sorted", "_grouped", "_dense"):
        real = getattr(experts, name)
        monkeypatch.setattr(experts, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    weights = _routing(4, 6, 6)[0]
    ids = torch.tensor([[0, 1], [2, 3], [4, 5], [0, 2]])  # at most 2 per expert: 6 x 2 rows of 8 used
    with torch.no_grad():
        out = experts(torch.randn(4, 16), weights, ids)
        lopsided = experts(torch.randn(4, 16), weights, torch.tensor([[0, 1]] * 4))
    assert out.shape == lopsided.shape == (4, 16)
    experts(torch.randn(4, 16, requires_grad=True), weights, ids).sum().backward()
    grouped = "_sorted" if grouped_mm_supported(torch.zeros(1), torch.zeros(1)) else "_grouped"
    assert calls == ["_padded", "_padded", grouped, grouped]
