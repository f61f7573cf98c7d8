"""Schema-guaranteed JSON: the layout as clamped tokens, slots as allowed sets, bounded repair rounds.

    round 1: the whole layout in the canvas: literal JSON clamped, each slot limited to its tokens
    after each round: a slot whose text is valid is clamped from then on; the others are renoised
             (a fresh request with a new seed, only they free) and denoised again
    after `max_rounds`: a slot still invalid is set to the nearest valid value (counted as repaired)

The result always parses and validates: every byte outside the slots is the layout's own text and
every slot holds a value valid for its schema. `JsonJob` holds one prompt's state so the same
rounds can run through `generation.run.run_json` (the Python API) or the server's engine worker.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from dgemma.engine.request import MAX_TOP_LOGPROBS, Request
from dgemma.engine.results import RowStats, TokenLogprob
from dgemma.structured import unique
from dgemma.structured.choices import DEFAULT_CANDIDATES, alternatives, best
from dgemma.structured.resolve import Budget, resolve
from dgemma.structured.schema import Layout, compile_schema
from dgemma.structured.slots import DEFAULT_STRING_TOKENS, SlotPlan, Vocabulary, plan_slot
from dgemma.structured.validate import validate
from dgemma.text import TextCodec

DEFAULT_ROUNDS = 3
ROUND_SEED_STRIDE = 1_000_003
_VOCABS: dict[tuple[int, int, tuple[int, ...]], Vocabulary] = {}


@dataclasses.dataclass
class JsonPlan:
    schema: dict[str, Any]
    tokens: list[int]  # the layout: literal tokens, filler at slot positions
    literal: list[bool]  # per position: part of the layout's fixed text
    slots: list[SlotPlan]
    vocab: Vocabulary
    # other layouts the model may choose instead (choices.py), each with the choice that made it
    alternatives: list[JsonPlan] = dataclasses.field(default_factory=list)
    choice: dict[str, int] = dataclasses.field(default_factory=dict)
    layout: Layout | None = None  # what it was tokenized from


MAX_LAYOUT_TOKENS = 8192  # literal and slot tokens of one schema's layout
MAX_CANDIDATE_LAYOUT = 512  # tokens of the rules' layout up to which candidate layouts are made
PLAN_CACHE = 64
_PLANS: dict[tuple, JsonPlan] = {}


def plan_json(
    schema: Any,
    codec: TextCodec,
    filler: int | None,
    eos_token_ids: tuple[int, ...],
    max_string_tokens: int = DEFAULT_STRING_TOKENS,
    candidates: int = DEFAULT_CANDIDATES,
) -> JsonPlan:
    """Lay `schema` out as tokens; ValueError for unsupported schemas or tokenizers without a filler.
    `candidates`: layouts in all the model may choose among (1: the rules' layout only).
    Plans are kept (the last PLAN_CACHE distinct schemas per tokenizer): a client sending the same
    schema with every request pays for normalizing and compiling it once."""
    try:
        key = (
            json.dumps(schema, sort_keys=True),
            id(codec),
            filler,
            tuple(eos_token_ids),
            max_string_tokens,
            candidates,
        )
    except (TypeError, ValueError):  # not JSON (compile_schema names the problem)
        key = None
    if key is not None and key in _PLANS and _PLANS[key].vocab.codec is codec:  # ids can be reused
        _PLANS[key] = _PLANS.pop(key)  # most recently used last
        return _PLANS[key]
    same = None  # the plan of this schema for another `candidates`: its rules' layout is reused
    if key is not None:
        same = next((p for k, p in _PLANS.items() if k[:-1] == key[:-1] and p.vocab.codec is codec), None)
    if same is not None:
        plan = dataclasses.replace(same, alternatives=[])
        _add_alternatives(plan, schema, candidates, max_string_tokens)
    else:
        plan = _plan_json(schema, codec, filler, eos_token_ids, max_string_tokens, candidates)
    if key is not None:
        _PLANS[key] = plan
        while len(_PLANS) > PLAN_CACHE:
            _PLANS.pop(next(iter(_PLANS)))
    return plan


def _plan_json(
    schema: Any,
    codec: TextCodec,
    filler: int | None,
    eos_token_ids: tuple[int, ...],
    max_string_tokens: int,
    candidates: int,
) -> JsonPlan:
    layout = compile_schema(schema)
    if filler is None or filler in eos_token_ids or codec.decode([filler]) != "":
        raise ValueError(
            "structured output needs a pad token that decodes to nothing and is not an end token"
        )
    key = (id(codec), filler, tuple(eos_token_ids))
    vocab = _VOCABS.get(key)
    if vocab is None:
        vocab = _VOCABS[key] = Vocabulary(codec, filler, set(eos_token_ids))
    plan = _plan_layout(layout, vocab, max_string_tokens)
    _add_alternatives(plan, schema, candidates, max_string_tokens)
    return plan


def _add_alternatives(plan: JsonPlan, schema: Any, candidates: int, max_string_tokens: int) -> None:
    if len(plan.tokens) > MAX_CANDIDATE_LAYOUT:  # a long layout runs alone: K of it would cost K times
        return
    for choice, other in alternatives(schema, plan.layout, candidates):
        try:
            alt = _plan_layout(other, plan.vocab, max_string_tokens)
        except ValueError:  # past MAX_LAYOUT_TOKENS
            continue
        alt.choice = choice
        plan.alternatives.append(alt)


def _plan_layout(layout: Layout, vocab: Vocabulary, max_string_tokens: int) -> JsonPlan:
    tokens: list[int] = []
    literal: list[bool] = []
    slots: list[SlotPlan] = []
    for part in layout.parts:
        if isinstance(part, str):
            ids = vocab.encode(part)
            tokens += ids
            literal += [True] * len(ids)
        else:
            plan = plan_slot(part, len(tokens), vocab, max_string_tokens)
            slots.append(plan)
            tokens += [vocab.filler] * plan.budget
            literal += [False] * plan.budget
        if len(tokens) > MAX_LAYOUT_TOKENS:
            raise ValueError(
                f"json_schema: the layout passes {MAX_LAYOUT_TOKENS} tokens; send a smaller schema or shorter strings"
            )
    return JsonPlan(layout.schema, tokens, literal, slots, vocab, layout=layout)


def _round_request(
    base: Request, plan: JsonPlan, tokens: list[int], settled: list[bool], seed: int
) -> Request:
    fixed = {p: t for p, (t, lit) in enumerate(zip(tokens, plan.literal, strict=True)) if lit}
    allowed: dict[int, tuple[int, ...]] = {}
    for slot, done in zip(plan.slots, settled, strict=True):
        for k in range(slot.budget):
            if done:
                fixed[slot.start + k] = tokens[slot.start + k]
            else:
                allowed[slot.start + k] = slot.allowed[k]
    return dataclasses.replace(
        base,
        max_new_tokens=len(tokens),
        seed=seed,
        eos_token_ids=(),
        fixed=fixed,
        allowed=allowed,
        logprobs=MAX_TOP_LOGPROBS,  # each position's alternatives, for resolve.py
    )


class JsonJob:
    """One prompt's structured generation: which slots are settled, the tokens so far, the stats."""

    def __init__(
        self,
        plan: JsonPlan,
        base: Request,
        max_rounds: int = DEFAULT_ROUNDS,
        alternatives: list[JsonPlan] | tuple[JsonPlan, ...] = (),
    ):
        """`alternatives`: candidate layouts (of `plan.alternatives`, those that fit the request's
        room) the first round runs beside `plan`; the best-scoring one is kept."""
        if max_rounds < 1:
            raise ValueError(f"`max_rounds` must be >= 1, got {max_rounds}")
        self.plan, self.base, self.max_rounds = plan, base, max_rounds
        self.tokens = list(plan.tokens)
        self.settled = [False] * len(plan.slots)
        self.stats = RowStats()
        self.rounds = 0
        self.candidates = [plan, *alternatives]
        self.choosing = len(self.candidates) > 1  # the first round runs every candidate layout

    @property
    def done(self) -> bool:
        return not self.choosing and (all(self.settled) or self.rounds >= self.max_rounds)

    def request(self) -> Request:
        """The engine request of the next round: literals and settled slots clamped, the rest free
        (the rules' layout: a caller asking for one request gives up the choice among candidates)."""
        self.choosing = False
        seed = (self.base.seed + self.rounds * ROUND_SEED_STRIDE) % 2**63
        return _round_request(self.base, self.plan, self.tokens, self.settled, seed)

    def requests(self) -> list[Request]:
        """The next round's requests: every candidate layout in the first round (run them as one
        batch and give `update_all` their outputs in this order), else the one of `request()`."""
        if not self.choosing:
            return [self.request()]
        return [
            dataclasses.replace(
                _round_request(self.base, p, list(p.tokens), [False] * len(p.slots), self.base.seed),
                score_fixed=True,
            )
            for p in self.candidates
        ]

    def update_all(self, outputs: list[tuple[list[int], RowStats, list[TokenLogprob] | None]]) -> None:
        """Take the outputs of `requests()`: with candidates, keep the best-scoring layout's."""
        if len(outputs) == 1:
            self.update(*outputs[0])
            return
        pick = best([(s.fixed_logprob, s.fixed_count) for _, s, _ in outputs])
        self.plan = self.candidates[pick]
        self.tokens = list(self.plan.tokens)
        self.settled = [False] * len(self.plan.slots)
        self.choosing = False
        self.stats.candidates = len(outputs)
        self.update(*outputs[pick])

    def update(self, tokens: list[int], stats: RowStats, tops: list[TokenLogprob] | None = None) -> None:
        """Take one round's output: keep free slots' tokens, settle the valid ones (an invalid one
        takes the most likely valid value its positions' alternatives `tops` hold, if any; resolve.py);
        repair at the end."""
        self.rounds += 1
        self.stats.rounds += 1  # cumulative when a job continues another (a tool choice's two stages)
        self.stats.add(stats)
        decodes = Budget()  # the joint reads of this round, together
        for i, plan in enumerate(self.plan.slots):
            if self.settled[i]:
                continue
            span = slice(plan.start, plan.start + plan.budget)
            self.tokens[span] = tokens[span]
            self.settled[i] = plan.is_valid(plan.text(self.tokens, self.plan.vocab))
            if not self.settled[i] and tops is not None:
                found = resolve(plan, tops[span], self.plan.vocab, decodes)
                if found is not None:
                    self.tokens[span] = found
                    self.settled[i] = True
                    self.stats.resolved_slots += 1
        layout, vocab = self.plan.layout, self.plan.vocab
        if self.rounds < self.max_rounds:
            if layout is not None and layout.unique:  # an item repeating an earlier one is written again
                for i in unique.repeats(layout, self.plan.slots, self.tokens, vocab, self.settled):
                    self.settled[i] = False
            return
        for i, plan in enumerate(self.plan.slots):
            if not self.settled[i]:
                self.tokens[plan.start : plan.start + plan.budget] = plan.repair(self.tokens, vocab)
                self.settled[i] = True
                self.stats.repaired_slots += 1
        if layout is not None and layout.unique:
            self.stats.repaired_slots += unique.make_distinct(layout, self.plan.slots, self.tokens, vocab)

    def text(self) -> str:
        """The final JSON text; checked to parse and validate (a failure here is a bug, not bad luck)."""
        text = self.plan.vocab.codec.decode(self.tokens)
        problems = validate(json.loads(text), self.plan.schema)
        if problems:
            raise RuntimeError(f"structured output failed validation: {problems[0]}")
        return text
