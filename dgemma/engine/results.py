"""Result types of a generation run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """The RowStats field an encoder pass is timed into: the prompt's prefill, or a canvas commit."""

    PREFILL = "prefill_s"
    COMMIT = "commit_s"


class FinishReason(StrEnum):
    STOP = "stop"  # an end-of-sequence token
    LENGTH = "length"  # max_new_tokens reached


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the distribution it was read from (for
    diffusion: the last denoising step of its canvas, temperature-scaled and constrained; the
    token is that distribution's argmax), and the `top` most likely (token, logprob) there."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class RowStats:
    """Per request: canvases and denoising steps (diffusion), forward passes and phase wall times in seconds."""

    canvases: int = 0
    steps_per_canvas: list[int] = field(default_factory=list)
    decoder_passes: int = 0  # bidirectional decoder passes: one per denoising step (0 in AR mode)
    encoder_passes: int = 0  # causal passes: the prompt, each canvas committed, each AR token
    prefill_s: float = 0.0
    denoise_s: float = 0.0
    commit_s: float = 0.0
    num_tokens: int = 0
    # mean entropy over each canvas's unclamped positions at its last step (the model's uncertainty)
    entropy_per_canvas: list[float] = field(default_factory=list)
    # structured output (json_schema) only: generation rounds run, and slots set to the nearest
    # valid value because the model had not written a valid one when the rounds ran out
    rounds: int = 0
    repaired_slots: int = 0
    # of the others, slots whose positions' argmaxes did not form a valid value and that took the
    # most likely valid value among their last-step alternatives instead (structured/resolve.py)
    resolved_slots: int = 0
    # candidate layouts run in the first round, the chosen one included (0: the schema left no choice)
    candidates: int = 0
    # requests with `score_fixed`: the clamped tokens' summed log-probability at each canvas's last
    # step, and their count
    fixed_logprob: float = 0.0
    fixed_count: int = 0

    def add(self, other: RowStats) -> None:
        """Accumulate another run of the same request (a structured-output round) into these stats."""
        self.canvases += other.canvases
        self.steps_per_canvas += other.steps_per_canvas
        self.decoder_passes += other.decoder_passes
        self.encoder_passes += other.encoder_passes
        self.prefill_s += other.prefill_s
        self.denoise_s += other.denoise_s
        self.commit_s += other.commit_s
        self.entropy_per_canvas += other.entropy_per_canvas
        self.fixed_logprob += other.fixed_logprob
        self.fixed_count += other.fixed_count
        self.num_tokens = other.num_tokens

    @property
    def forward_passes(self) -> int:
        return self.decoder_passes + self.encoder_passes

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward pass of the network, either kind (AR: about 1)."""
        return self.num_tokens / self.forward_passes if self.forward_passes else 0.0

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "forward_passes": self.forward_passes,
            "tokens_per_forward": self.tokens_per_forward,
        }


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: FinishReason
    stats: RowStats
    logprobs: list[TokenLogprob] | None = None  # per token, when the request asked for them
