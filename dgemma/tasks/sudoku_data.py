"""Sudoku as a language-model task: the tokenizer, the prompt/canvas format, and the training data.

A prompt is `<bos>`, the 81 puzzle characters ('0' for blanks) and `<sep>`; the response is the 81
solution digits and `<eos>`, which fills exactly one 82-token canvas. Training examples are random
symmetries of a pool of generated puzzles (see `sudoku.transform`), drawn deterministically by index.
Half of them keep their givens clean in the canvas (never corrupted, no loss), matching the
solver's `clamp_givens`; the other half see their givens only in the prompt.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from dgemma.config.model import MINIMAL_VISION_CONFIG
from dgemma.tasks import sudoku
from dgemma.train.batch import Example

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


def build_pool(
    seed: int,
    size: int,
    givens: tuple[int, int] = (22, 50),
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> list[sudoku.Puzzle]:
    """Training puzzles 0..size-1 of the seeded stream, generated in parallel processes; with `cache`
    they are read from (or written atomically to) that file, one `puzzle,solution` line each."""
    if cache is not None and cache.is_file():
        lines = cache.read_text().split()
        if len(lines) == size:
            return [sudoku.Puzzle(*line.split(",")) for line in lines]
    pool: list[sudoku.Puzzle] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as ex:
        make = partial(sudoku.train_puzzle, seed, givens=givens)
        for p in ex.map(make, range(size), chunksize=64):
            pool.append(p)
            if progress:
                progress(len(pool))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text("".join(f"{p.puzzle},{p.solution}\n" for p in pool))
        os.replace(tmp, cache)
    return pool


class SudokuData:
    """Training examples by index: random symmetries of a pool of generated puzzles (each from its
    own randomly searched grid)."""

    def __init__(self, fmt: SudokuFormat, seed: int, pool: list[sudoku.Puzzle], clamped_share: float = 0.5):
        if not pool:
            raise ValueError("the training pool is empty")
        self.fmt, self.seed, self.clamped_share, self.pool = fmt, seed, clamped_share, pool

    def examples(self, index: int, count: int) -> list[Example]:
        rng = random.Random(f"dgemma-sudoku-batch-{self.seed}-{index}")
        out = []
        for _ in range(count):
            p = sudoku.transform(rng.choice(self.pool), rng)
            clean: tuple[int, ...] = ()
            if rng.random() < self.clamped_share:  # givens and <eos> clean in the canvas, as clamping does
                clean = (*(i for i, ch in enumerate(p.puzzle) if ch != "0"), sudoku.SIZE)
            out.append(Example(self.fmt.prompt(p.puzzle), self.fmt.response(p.solution), clean))
        return out


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
