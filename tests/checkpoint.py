"""A complete tiny checkpoint directory for tests: reference weights, a tokenizer trained here, a chat template."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from tests.reference import build_reference

SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]  # ids 0..4
TEMPLATES = Path(__file__).with_name("data") / "chat_templates"
# the special tokens Gemma 4's chat template writes (tests/data/chat_templates/gemma4.jinja)
GEMMA4_SPECIALS = [
    "<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>", "<|tool>", "<tool|>", "<|tool_call>",
    "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>', "<|image|>", "<|audio|>", "<|video|>",
]  # fmt: skip
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CORPUS = [
    "Why is the sky blue? Sunlight scatters off air molecules, and blue light scatters most.",
    "The quick brown fox jumps over the lazy dog.",
    "Diffusion models refine a whole block of text in parallel.",
    "def add(a, b):\n    return a + b\n",
    '{"name": "sudoku", "solved": true, "steps": 12}',
]


def train_tokenizer(vocab_size: int, extra_specials: list[str] = ()) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra_specials])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def make_checkpoint(
    directory: Path,
    seed: int = 0,
    canvas_length: int = 8,
    eos_token_ids=(1, 4),
    template: str = CHAT_TEMPLATE,
    extra_specials: list[str] = (),
    **text_overrides,
):
    """Write a loadable DiffusionGemma checkpoint into `directory`; returns the reference model."""
    tok = train_tokenizer(vocab_size=320, extra_specials=extra_specials)
    vocab = tok.get_vocab_size()
    vision = text_overrides.pop("vision", None)
    top = None
    if vision is not None:  # a vision tower whose image tokens are this tokenizer's
        top = {"image_token_id": tok.token_to_id("<|image|>")}
        top |= {"boi_token_id": tok.token_to_id("<|image>"), "eoi_token_id": tok.token_to_id("<image|>")}
    ref = build_reference(
        directory,
        seed=seed,
        canvas_length=canvas_length,
        vocab_size=vocab,
        vision=vision,
        top=top,
        **text_overrides,
    )
    tok.save(str(directory / "tokenizer.json"))
    (directory / "chat_template.jinja").write_text(template)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"})
    )
    gen = {
        "max_new_tokens": 24,
        "max_denoising_steps": 6,
        "sampler_config": {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1},
        "t_min": 0.4,
        "t_max": 0.8,
        "stability_threshold": 1,
        "confidence_threshold": 0.005,
        "eos_token_id": list(eos_token_ids),
        "pad_token_id": 0,
    }
    (directory / "generation_config.json").write_text(json.dumps(gen))
    return ref


def make_gemma4_checkpoint(directory: Path, template: str = "gemma4.jinja", seed: int = 0):
    """A tiny checkpoint with Gemma 4's chat format: its template and its special tokens; generation
    ends at <eos> or <turn|>, as Gemma 4's does."""
    tok = train_tokenizer(vocab_size=320, extra_specials=GEMMA4_SPECIALS)
    end_of_turn = tok.token_to_id("<turn|>")
    text = (TEMPLATES / template).read_text()
    return make_checkpoint(
        directory, seed=seed, eos_token_ids=(1, end_of_turn), template=text, extra_specials=GEMMA4_SPECIALS
    )


# a vision tower small enough for CPU tests: 4-pixel patches, 3 x 3 pooling, 70 soft tokens an image
TINY_TOWER = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=8,
    patch_size=4,
    pooling_kernel_size=3,
    position_embedding_size=256,
    standardize=True,
)
IMAGE_PROCESSOR = {"patch_size": 4, "pooling_kernel_size": 3, "max_soft_tokens": 70}


def make_vision_checkpoint(directory: Path, seed: int = 0, std: float = 0.15):
    """A tiny Gemma-4-format checkpoint with a vision tower (image tokens `<|image|>`, `<|image>`,
    `<image|>` in its tokenizer; image soft tokens see each other, as the 26B checkpoint's do)."""
    specials = [*GEMMA4_SPECIALS, "<|image>", "<image|>"]
    tok = train_tokenizer(vocab_size=320, extra_specials=specials)
    text = (TEMPLATES / "gemma4.jinja").read_text()
    ref = make_checkpoint(
        directory,
        seed=seed,
        std=std,
        eos_token_ids=(1, tok.token_to_id("<turn|>")),
        template=text,
        extra_specials=specials,
        vision=TINY_TOWER,
        use_bidirectional_attention="vision",
    )
    (directory / "processor_config.json").write_text(json.dumps({"image_processor": IMAGE_PROCESSOR}))
    return ref
