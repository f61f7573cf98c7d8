"""GPU checks (skipped without CUDA): bfloat16 parity with the reference on the device."""

from __future__ import annotations

import pytest
import torch

import dgemma


@pytest.mark.gpu
def test_bfloat16_decoder_parity_on_gpu(checkpoint):
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

    directory, _ = checkpoint
    ids, canvas = torch.arange(5, 17)[None].cuda(), (torch.arange(8)[None] + 20).cuda()
    ref = DiffusionGemmaForBlockDiffusion.from_pretrained(directory, dtype=torch.bfloat16).cuda().eval()
    ref32 = DiffusionGemmaForBlockDiffusion.from_pretrained(directory, dtype=torch.float32).cuda().eval()

    def reference(model):
        with torch.no_grad():
            cache = DynamicCache(config=model.config.get_text_config(decoder=True))
            model.model.encoder(input_ids=ids, past_key_values=cache)
            return model(past_key_values=cache, decoder_input_ids=canvas).logits

    mine = dgemma.load(directory, device="cuda")  # bfloat16 by default on the GPU
    assert mine.model.dtype == torch.bfloat16
    got, want16, want32 = mine.decoder_logits(ids, canvas), reference(ref), reference(ref32)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(got, want16) < 0.2 * rel(want16, want32)
