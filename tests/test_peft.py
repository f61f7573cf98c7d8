"""LoRA adapters in PEFT's format, both ways against the reference: an adapter dgemma writes loads
with `peft` onto transformers' model and gives dgemma's logits; one `peft` writes loads with
`dgemma.load(adapter=...)` and gives the reference's logits. Bad adapters are clear errors."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import dgemma
from dgemma.train.lora import apply_lora
from dgemma.train.peft_format import PassLoRALinear, save_adapter
from tests.checkpoint import make_checkpoint
from tests.cli import run

peft = pytest.importorskip("peft")
TOL = 2e-4
IDS = [[2, 17, 99, 45, 3, 8, 100]]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    directory = tmp_path_factory.mktemp("peft-base")
    make_checkpoint(directory, seed=5, std=0.05)
    return directory


def reference(directory):
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(directory, dtype=torch.float32).eval()


def reference_logits(ref):
    """Encoder logits (softcapped, as the model's) and decoder logits of a fixed canvas."""
    from transformers import DynamicCache

    ids = torch.tensor(IDS)
    canvas = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        cache = DynamicCache(config=ref.config.get_text_config(decoder=True))
        hidden = ref.model.encoder(input_ids=ids, past_key_values=cache).last_hidden_state
        cap = ref.config.text_config.final_logit_softcapping
        enc = torch.tanh(ref.lm_head(hidden).float() / cap) * cap
        dec = ref(past_key_values=cache, decoder_input_ids=canvas).logits
    return enc, dec


def ours(model):
    canvas = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    return model.encoder_logits(IDS), model.decoder_logits(IDS, canvas)


def close(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_a_dgemma_adapter_loads_with_peft_and_gives_the_same_logits(base, tmp_path):
    model = dgemma.load(base)
    apply_lora(model.model, rank=4, alpha=8.0, seed=1)
    with torch.no_grad():  # a trained adapter: B away from its zero start
        for name, p in model.model.named_parameters():
            if name.endswith(".B"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
    adapter = save_adapter(model.model, tmp_path / "adapter", str(base))
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    mine_enc, mine_dec = ours(model)
    ref = peft.PeftModel.from_pretrained(reference(base), adapter).base_model.model
    ref_enc, ref_dec = reference_logits(ref)
    plain_enc, _ = reference_logits(reference(base))
    assert close(plain_enc, ref_enc) > 100 * TOL  # the adapter changes the logits
    assert close(mine_enc, ref_enc) <= TOL and close(mine_dec, ref_dec) <= TOL
    merged = dgemma.load(base, adapter=adapter)  # and back: both passes agree, merged into the weights
    assert not any(isinstance(m, PassLoRALinear) for m in merged.model.modules())
    assert close(ours(merged)[0], ref_enc) <= TOL and close(ours(merged)[1], ref_dec) <= TOL
    cli = run(
        "generate", "hi", "--model", str(base), "--adapter", str(adapter), "--max-new-tokens", "8", "--json"
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["token_ids"] == merged.generate("hi", max_new_tokens=8).token_ids[0]


def test_a_peft_adapter_loads_with_dgemma_and_gives_the_reference_logits(base, tmp_path):
    ref = reference(base)
    targets = [
        n
        for n, m in ref.named_modules()
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in ("q_proj", "v_proj", "down_proj")
        and "vision" not in n
    ]  # fmt: skip
    config = peft.LoraConfig(r=2, lora_alpha=5, target_modules=targets, init_lora_weights=False)
    wrapped = peft.get_peft_model(ref, config)
    wrapped.save_pretrained(tmp_path / "from-peft")
    ref_enc, ref_dec = reference_logits(wrapped.base_model.model)
    model = dgemma.load(base, adapter=tmp_path / "from-peft")
    per_pass = [m for m in model.model.modules() if isinstance(m, PassLoRALinear)]
    assert len(per_pass) == sum("language_model" in t for t in targets)  # the passes' adapters differ
    mine_enc, mine_dec = ours(model)
    assert close(mine_enc, ref_enc) <= TOL and close(mine_dec, ref_dec) <= TOL
    plain_enc, _ = ours(dgemma.load(base))
    assert close(plain_enc, ref_enc) > 100 * TOL


def test_bad_adapters_are_clear_errors(base, tmp_path):
    model = dgemma.load(base)
    apply_lora(model.model, rank=2, alpha=4.0)
    adapter = save_adapter(model.model, tmp_path / "ok")
    config = json.loads((adapter / "adapter_config.json").read_text())
    for field, value, message in [
        ("use_dora", True, "use_dora"),
        ("peft_type", "IA3", "peft_type"),
        ("r", 3, "r is 3"),
    ]:
        bad = tmp_path / field
        bad.mkdir()
        (bad / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
        (bad / "adapter_config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(dgemma.CheckpointError, match=message):
            dgemma.load(base, adapter=bad)
    with pytest.raises(ValueError, match="merge the adapter first"):
        dgemma.load(base, adapter=adapter, quantize="int8")
    with pytest.raises(dgemma.CheckpointError, match="missing file"):
        dgemma.load(base, adapter=tmp_path)
