"""The two categorical draws: the reference one is torch.multinomial's, the fast one the same distribution."""

from __future__ import annotations

import pytest
import torch

from dgemma.sampling.draws import block_size, inverse_cdf_draw, reference_draw

V = 40
BLOCKED_V = 1024  # a vocabulary the fast draw splits into blocks of 32 for its running sum


def _probs(g: torch.Generator, rows: int, V: int = V) -> torch.Tensor:
    logits = torch.randn(rows, V, generator=g) * torch.linspace(0.1, 4.0, rows)[:, None]
    logits[:, ::3] = float("-inf")  # masked tokens: probability exactly 0
    return torch.softmax(logits, dim=-1)


def test_reference_draw_equals_multinomial_bit_for_bit():
    probs = _probs(torch.Generator().manual_seed(0), 64)
    for seed in range(5):
        expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        got = reference_draw(probs, torch.empty_like(probs), torch.Generator().manual_seed(seed))
        assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("draw", "V"), [(inverse_cdf_draw, V), (inverse_cdf_draw, BLOCKED_V), (reference_draw, V)]
)
def test_draw_frequencies_match_the_probabilities(draw, V):
    """A chi-square test per distribution (6 of them, 20,000 draws each); never a token of probability 0.
    Seeded, so it cannot flake; a biased draw (e.g. an off-by-one in the search) fails it."""
    g = torch.Generator().manual_seed(1)
    probs = _probs(g, 6, V)
    n = 20_000
    batch = probs.repeat(n, 1)  # (6n, V): row i has distribution i % 6
    draws = draw(batch, torch.empty_like(batch), g).view(n, 6)
    for row in range(6):
        counts = torch.bincount(draws[:, row], minlength=V).double()
        assert counts[probs[row] == 0].sum() == 0
        expected = probs[row].double() * n
        keep = expected >= 5  # chi-square's usual validity rule; the rest pooled
        observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
        wanted = torch.cat([expected[keep], expected[~keep].sum()[None]])
        wanted = wanted * observed.sum() / wanted.sum()
        observed, wanted = observed[wanted > 0], wanted[wanted > 0]
        statistic = ((observed - wanted) ** 2 / wanted).sum()
        dof = torch.tensor(len(wanted) - 1.0, dtype=torch.float64)
        p = float(torch.special.gammaincc(dof / 2, statistic / 2))  # the chi-square survival function
        assert p > 1e-4, f"row {row}: p = {p:.2e}"


@pytest.mark.parametrize("V", [V, BLOCKED_V])
def test_inverse_cdf_never_draws_past_the_last_possible_token(V):
    probs = torch.zeros(3, V)
    probs[:, 5] = 1.0  # one possible token; the cumulative sum is flat after it
    probs[1, 5], probs[1, V - 1] = 0.5, 0.5  # the other one in the last block
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        got = inverse_cdf_draw(probs, torch.empty_like(probs), g)
        assert (got[[0, 2]] == 5).all() and got[1] in (5, V - 1)


def test_inverse_cdf_keeps_the_leading_shape():
    probs = torch.softmax(torch.randn(2, 3, BLOCKED_V), dim=-1)
    got = inverse_cdf_draw(probs, torch.empty_like(probs), torch.Generator().manual_seed(0))
    assert got.shape == (2, 3) and bool((got >= 0).all()) and bool((got < BLOCKED_V).all())


def test_block_sizes():
    assert block_size(BLOCKED_V) == 32 and block_size(262_144) == 512 and block_size(4096) == 64
    assert block_size(V) == 1 and block_size(50_257) == 1  # small or odd: one running sum
