from __future__ import annotations

import logging

import pytest
import torch

from tests.checkpoint import make_checkpoint


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """(directory, reference model) of a tiny random checkpoint with tokenizer and chat template."""
    directory = tmp_path_factory.mktemp("tiny")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    ref = make_checkpoint(directory, seed=3)
    return directory, ref


@pytest.fixture(scope="session")
def model(checkpoint):
    import dgemma

    return dgemma.load(checkpoint[0])


@pytest.fixture(scope="session")
def conditioned(tmp_path_factory):
    """(directory, reference, dgemma model) of a well-conditioned random checkpoint (weight std 0.05).

    Sampled tokens are compared on this one: rounding differences stay at rounding level through many
    self-conditioned denoising steps instead of growing threefold per step (see tests/reference.py).
    """
    import dgemma

    directory = tmp_path_factory.mktemp("conditioned")
    ref = make_checkpoint(directory, seed=5, std=0.05)
    return directory, ref, dgemma.load(directory)
