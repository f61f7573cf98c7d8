"""The training pass (no cache, all canvases at once) equals the inference path, and is differentiable."""

from __future__ import annotations

import torch

from dgemma.engine.cache import KVCache
from dgemma.engine.passes import decode_rows, encode_rows
from dgemma.model.blockwise import forward_blockwise


def _batch(model, prompt_lengths, num_canvases, seed):
    C, V, H = model.config.canvas_length, model.config.vocab_size, model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, V, (n,), generator=g).tolist() for n in prompt_lengths]
    responses = [torch.randint(0, V, (num_canvases * C,), generator=g).tolist() for _ in prompt_lengths]
    noisy = torch.randint(0, V, (len(prompts), num_canvases * C), generator=g)
    soft = torch.randn(len(prompts), num_canvases * C, H, generator=g)
    T = max(len(p) for p in prompts) + num_canvases * C
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[b, : len(p) + len(r)] = torch.tensor(p + r)
    starts = torch.tensor([[len(p) + k * C for k in range(num_canvases)] for p in prompts])
    return prompts, responses, noisy, soft, ids, starts


def test_blockwise_equals_cached_inference(model):
    """Two rows of different prompt lengths, three canvases each, sliding window shorter than the context."""
    m = model.model
    C = m.config.canvas_length
    prompts, responses, noisy, soft, ids, starts = _batch(model, [5, 9], 3, seed=0)
    with torch.no_grad():
        enc_hidden, dec_hidden = forward_blockwise(m, ids, noisy, starts, soft)
        enc_logits, dec_logits = m.logits(enc_hidden), m.logits(dec_hidden)
    worst = 0.0
    for b, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        full = prompt + response
        expected_enc = model.encoder_logits([full])[0]
        worst = max(worst, (enc_logits[b, : len(full)] - expected_enc).abs().max().item())
        for k in range(3):
            with torch.inference_mode():
                kv = KVCache(m.config, 1, len(full) + C, m.dtype, m.device)
                encode_rows(m, kv, [0], [prompt + response[: k * C]])
                got = decode_rows(
                    m, kv, [0], noisy[b : b + 1, k * C : (k + 1) * C], soft[b : b + 1, k * C : (k + 1) * C]
                )
                expected = m.logits(got)[0]
            worst = max(worst, (dec_logits[b, k * C : (k + 1) * C] - expected).abs().max().item())
    print(f"blockwise vs cached: max abs diff {worst:.2e}")
    assert worst <= 1e-4


def test_blockwise_is_differentiable(checkpoint):
    import dgemma

    m = dgemma.load(checkpoint[0]).model.requires_grad_(True).train()
    _, _, noisy, soft, ids, starts = _batch(dgemma.load(checkpoint[0]), [4, 7], 2, seed=1)
    enc_hidden, dec_hidden = forward_blockwise(m, ids, noisy, starts, soft)
    loss = m.logits(dec_hidden).logsumexp(-1).mean() + m.logits(enc_hidden).logsumexp(-1).mean()
    loss.backward()
    for name in (
        "embed_tokens.weight",
        "layers.0.self_attn.k_proj.weight",
        "layers.1.experts.gate_up_proj",
        "layers.3.router.proj.weight",
        "self_conditioning.gate_proj.weight",
    ):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
