"""Sudoku as a language-model task: the tokenizer, the prompt/canvas format, the model config, and
the chat template.

A prompt is `<bos>`, the 81 puzzle characters ('0' for blanks) and `<sep>`; the response is the 81
solution digits and `<eos>`, which fills exactly one 82-token canvas. The chat template takes the
puzzle as the user turn (whitespace ignored, '.' for blanks allowed) and writes the same prompt.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from dgemma.config.model import MINIMAL_VISION_CONFIG
from dgemma.tasks.sudoku import grid as sudoku

CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")
SPECIALS = ["<pad>", "<eos>", "<bos>", "<sep>"]
VOCAB = SPECIALS + list("0123456789")
CANVAS_LENGTH = sudoku.SIZE + 1  # 81 digits and <eos>


def build_tokenizer() -> Tokenizer:
    """One token per character: the specials, then the digits 0-9."""
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("<[a-z]+>|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    return tok


class SudokuFormat:
    """Token ids of prompts and responses, and reading a grid back from generated ids."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids = {t: tokenizer.token_to_id(t) for t in VOCAB}
        if any(i is None for i in self.ids.values()):
            raise ValueError(
                "the tokenizer lacks Sudoku tokens; it must contain <pad> <eos> <bos> <sep> and 0-9"
            )

    def prompt(self, puzzle: str) -> list[int]:
        cells = sudoku.parse(puzzle)
        return [self.ids["<bos>"], *(self.ids[str(c)] for c in cells), self.ids["<sep>"]]

    def response(self, solution: str) -> list[int]:
        return [*(self.ids[ch] for ch in solution), self.ids["<eos>"]]

    def grid(self, token_ids: list[int]) -> str:
        """The first 81 characters the ids decode to (shorter if the model stopped early)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)[: sudoku.SIZE]


def model_config(
    hidden_size: int = 128, num_layers: int = 6, num_experts: int = 8, sliding_window: int = 96
) -> dict:
    """config.json of a small DiffusionGemma for Sudoku: MoE experts, sliding and full layers, self-conditioning."""
    pattern = ["sliding_attention", "sliding_attention", "full_attention"]
    heads = max(2, hidden_size // 32)
    return {
        "model_type": "diffusion_gemma",
        "architectures": ["DiffusionGemmaForBlockDiffusion"],
        "canvas_length": CANVAS_LENGTH,
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "diffusion_gemma_text",
            "vocab_size": len(VOCAB),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "head_dim": 32,
            "per_layer_config": {
                str(i): {"head_dim": 64, "num_key_value_heads": 1}
                for i in range(num_layers)
                if pattern[i % 3] == "full_attention" or i == num_layers - 1
            },
            "layer_types": [pattern[i % 3] for i in range(num_layers - 1)] + ["full_attention"],
            "sliding_window": sliding_window,
            "num_experts": num_experts,
            "top_k_experts": 2,
            "moe_intermediate_size": hidden_size,
            "max_position_embeddings": 512,
            "pad_token_id": VOCAB.index("<pad>"),
            "eos_token_id": VOCAB.index("<eos>"),
            "bos_token_id": VOCAB.index("<bos>"),
        },
        "vision_config": dict(MINIMAL_VISION_CONFIG),
    }
