"""The continuous-batching engine: requests join and leave mid-run, a row's tokens never depend on its mates."""

from __future__ import annotations

import pytest
import torch

from dgemma.config import SamplerConfig
from dgemma.engine.diffusion import DiffusionEngine, run_diffusion
from dgemma.engine.events import CommitEvent, DoneEvent, FinishEvent
from dgemma.engine.request import Request

SAMPLER = SamplerConfig(max_denoising_steps=12)


def _request(seed: int, n: int, vocab: int, max_new: int = 20) -> Request:
    prompt = torch.randint(5, vocab, (n,), generator=torch.Generator().manual_seed(100 + seed)).tolist()
    return Request(prompt, max_new, SAMPLER, seed, ())


def _alone(model, request: Request) -> list[int]:
    *_, done = run_diffusion(model.model, [request])
    assert isinstance(done, DoneEvent)
    return done.completions[0].token_ids


def _drain(engine: DiffusionEngine, finished: dict[int, list[int]], steps: int | None = None) -> None:
    n = 0
    while engine.busy and (steps is None or n < steps):
        for event in engine.step():
            if isinstance(event, FinishEvent):
                finished[event.row] = event.completion.token_ids
        n += 1


def test_requests_joining_mid_run_equal_their_runs_alone(conditioned):
    _, _, model = conditioned
    V = model.config.vocab_size
    requests = [_request(i, 3 + 2 * i, V) for i in range(6)]
    engine = DiffusionEngine(model.model, num_rows=3, capacity=64)
    finished: dict[int, list[int]] = {}
    ids = [engine.add(requests[0]), engine.add(requests[1])]
    _drain(engine, finished, steps=5)  # two rows mid-canvas when the others arrive
    ids += [engine.add(r) for r in requests[2:]]
    assert engine.num_waiting == 4
    _drain(engine, finished, steps=1)
    assert engine.num_waiting == 3 and engine.num_active == 3  # one free row for four new requests
    _drain(engine, finished)
    assert not engine.busy and engine.num_active == 0
    for rid, req in zip(ids, requests, strict=True):
        assert finished[rid] == _alone(model, req)


def test_cancel_frees_the_row_for_a_waiting_request(model):
    V = model.config.vocab_size
    engine = DiffusionEngine(model.model, num_rows=1, capacity=64)
    first = engine.add(_request(0, 4, V, max_new=24))
    second = engine.add(_request(1, 4, V))
    engine.step()
    assert engine.num_active == 1 and engine.num_waiting == 1
    assert engine.cancel(first) and not engine.cancel(first)
    finished: dict[int, list[int]] = {}
    _drain(engine, finished)
    assert set(finished) == {second}
    assert engine.cancel(12345) is False


def test_each_request_commits_at_its_own_pace(model):
    """A quick request finishes and leaves while a slow one is still on its first canvas."""
    quick = Request(
        [5, 6, 7],
        4,
        SamplerConfig(max_denoising_steps=6, stability_threshold=0, confidence_threshold=100.0),
        0,
        (),
    )
    slow = Request([8, 9], 16, SamplerConfig(max_denoising_steps=10, confidence_threshold=1e-9), 1, ())
    engine = DiffusionEngine(model.model, num_rows=2, capacity=64)
    q, s = engine.add(quick), engine.add(slow)
    first = engine.step()
    assert [type(e) for e in first] == [CommitEvent, FinishEvent] and first[1].row == q
    assert engine.num_active == 1
    finished: dict[int, list[int]] = {}
    _drain(engine, finished)
    assert len(finished[s]) == 16


def test_request_longer_than_a_row_is_refused(model):
    engine = DiffusionEngine(model.model, num_rows=2, capacity=16)
    with pytest.raises(ValueError, match="rows hold 16"):
        engine.add(_request(0, 4, model.config.vocab_size, max_new=20))


def test_sampler_steps_reuse_two_vocabulary_buffers_on_a_cpu(conditioned, monkeypatch):
    """Every step of every row writes its logits and probabilities into the engine's two kept
    buffers (a fresh tensor at the real vocabulary page-faults on each of its pages), and the
    tokens and log-probabilities are those of fresh tensors."""
    _, _, model = conditioned
    V = model.config.vocab_size
    requests = [_request(i, 4 + i, V, max_new=12) for i in range(2)]
    written = []  # the tensor each head call wrote into
    real = model.model.logits

    def spy(hidden, ids=None, **options):
        logits = real(hidden, ids, **options)
        out = options.get("out")
        assert out is None or logits.data_ptr() == out.data_ptr()
        written.append(out)
        return logits

    monkeypatch.setattr(model.model, "logits", spy)
    kept = [c.token_ids for c in list(run_diffusion(model.model, requests))[-1].completions]
    assert len(written) > 2 and all(w is written[0] for w in written) and written[0] is not None
    monkeypatch.setattr(DiffusionEngine, "_buffers", lambda self: None)
    written.clear()
    fresh = [c.token_ids for c in list(run_diffusion(model.model, requests))[-1].completions]
    assert fresh == kept and set(map(id, written)) == {id(None)}
