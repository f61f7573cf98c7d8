"""Logit-level parity with the reference (transformers 5.23.0) on tiny random configs, float32.

The tiny config covers: sliding window (6) shorter than prompt plus canvases, full-attention layers
with their own head_dim (16) and kv heads (1) and no v_proj, proportional partial RoPE, MoE with
top-k 2 of 4, distinct encoder and decoder layer scalars, and every norm and scale randomised.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import DynamicCache

from dgemma.engine.cache import KVCache
from dgemma.engine.passes import decode_rows, encode_rows

TOL = 1e-4


def _report(name: str, mine: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (mine - ref).abs()
    print(f"{name}: max abs diff {diff.max().item():.2e}, mean {diff.mean().item():.2e}")
    return diff.max().item()


def _ref_encoder_logits(ref, hidden):
    cap = ref.config.text_config.final_logit_softcapping
    return torch.tanh(ref.lm_head(hidden).float() / cap) * cap


def test_encoder_and_decoder_logits(checkpoint, model):
    _, ref = checkpoint
    C, V = model.config.canvas_length, model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (1, 13), generator=g)  # 13 > sliding window 6
    canvas = torch.randint(0, V, (1, C), generator=g)
    sc_logits = 3 * torch.randn(1, C, V, generator=g)
    with torch.no_grad():
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        enc = ref.model.encoder(input_ids=ids, past_key_values=cache)
        ref_enc = _ref_encoder_logits(ref, enc.last_hidden_state)
        ref_dec = ref(past_key_values=cache, decoder_input_ids=canvas).logits
        ref_dec_sc = ref(
            past_key_values=cache, decoder_input_ids=canvas, self_conditioning_logits=sc_logits
        ).logits
    assert _report("encoder", model.encoder_logits(ids), ref_enc) <= TOL
    assert _report("decoder", model.decoder_logits(ids, canvas), ref_dec) <= TOL
    assert _report("decoder+sc", model.decoder_logits(ids, canvas, sc_logits), ref_dec_sc) <= TOL


def test_batch_of_two_prompt_lengths(checkpoint, model):
    """Ragged rows in dgemma; left padding with per-row position ids in the reference."""
    _, ref = checkpoint
    C, V = model.config.canvas_length, model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    lengths = [7, 13]
    rows = [torch.randint(5, V, (n,), generator=g).tolist() for n in lengths]
    canvas = torch.randint(0, V, (2, C), generator=g)
    T = max(lengths)
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    positions = torch.zeros(2, T, dtype=torch.long)
    for i, r in enumerate(rows):
        pad = T - len(r)
        ids[i, pad:] = torch.tensor(r)
        mask[i, pad:] = 1
        positions[i] = torch.arange(T) - pad
    with torch.no_grad():
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        enc = ref.model.encoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache
        )
        ref_enc = _ref_encoder_logits(ref, enc.last_hidden_state)
        dec_positions = torch.tensor(lengths)[:, None] + torch.arange(C)
        dec_mask = torch.nn.functional.pad(mask, (0, C), value=1)
        ref_dec = ref(
            past_key_values=cache,
            decoder_input_ids=canvas,
            decoder_position_ids=dec_positions,
            decoder_attention_mask=dec_mask,
        ).logits
    mine_enc = model.encoder_logits(ids, attention_mask=mask)
    valid = mask.bool()
    assert _report("encoder (batch)", mine_enc[valid], ref_enc[valid]) <= TOL
    assert _report("decoder (batch)", model.decoder_logits(rows, canvas), ref_dec) <= TOL


def test_decoder_after_three_committed_canvases(checkpoint, model):
    """Prompt, then three canvases committed through the encoder one at a time, then a fourth decoded."""
    _, ref = checkpoint
    C, V = model.config.canvas_length, model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(5, V, (1, 5), generator=g)
    canvases = [torch.randint(0, V, (1, C), generator=g) for _ in range(4)]
    sc_logits = 2 * torch.randn(1, C, V, generator=g)
    with torch.no_grad():
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        ref.model.encoder(input_ids=prompt, past_key_values=cache)
        for c in canvases[:3]:
            ref.model.encoder(input_ids=c, past_key_values=cache)
        ref_dec = ref(
            past_key_values=cache, decoder_input_ids=canvases[3], self_conditioning_logits=sc_logits
        ).logits

        kv = KVCache(model.config, 1, 5 + 4 * C, model.model.dtype, model.model.device)
        encode_rows(model.model, kv, [0], [prompt[0].tolist()])
        for c in canvases[:3]:
            encode_rows(model.model, kv, [0], [c[0].tolist()])
        soft = model.model.soft_embedding(sc_logits)
        mine = model.model.logits(decode_rows(model.model, kv, [0], canvases[3], soft))
    assert int(kv.lengths[0]) == 5 + 3 * C
    assert _report("decoder after 3 commits", mine, ref_dec) <= TOL


def test_the_fast_softcap_stays_within_1e5_of_the_references(checkpoint, model):
    """The sampler's fast mode writes the softcap with a sigmoid; across the whole range of raw
    logits (far past the cap) it stays within 1e-5 of the reference's tanh."""
    _, ref = checkpoint
    H = model.config.hidden_size
    hidden = torch.randn(1, 64, H, generator=torch.Generator().manual_seed(4))
    hidden = hidden * torch.logspace(-3, 2, 64)[None, :, None]  # raw logits from ~1e-3 to ~1e3
    with torch.no_grad():
        fast = model.model.logits(hidden, exact=False)
        exact = model.model.logits(hidden)
        ref_logits = _ref_encoder_logits(ref, hidden)
    assert _report("exact softcap", exact, ref_logits) <= 1e-6
    assert _report("fast softcap", fast, ref_logits) <= 1e-5


def test_router_weights_are_the_references_bit_for_bit():
    from transformers.models.diffusion_gemma.configuration_diffusion_gemma import DiffusionGemmaTextConfig
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextRouter

    from dgemma.model.layers import Router

    config = DiffusionGemmaTextConfig(hidden_size=64, num_experts=8, top_k_experts=2)
    ref = DiffusionGemmaTextRouter(config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    mine = Router(
        SimpleNamespace(top_k_experts=2, hidden_size=64, rms_norm_eps=config.rms_norm_eps, num_experts=8)
    )
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(256, 64, generator=g)
    with torch.no_grad():
        _, ref_weights, ref_ids = ref(x)
        weights, ids = mine(x)
    assert torch.equal(ids, ref_ids) and torch.equal(weights, ref_weights)
