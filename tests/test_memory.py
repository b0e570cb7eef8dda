"""Chunks sized to the free memory of the device."""
import pytest
import torch

import leaklab
from leaklab._memory import fit_chunk, free_bytes
from leaklab.games.protocol import _chunk, release_gradients


def test_fit_chunk_divides_a_fraction_of_the_free_memory():
    assert fit_chunk(1000, available=10**6, fraction=0.5) == 500
    assert fit_chunk(1000, available=10**6, fraction=0.25, maximum=100) == 100
    assert fit_chunk(10**9, available=10**6, minimum=64) == 64
    free = free_bytes("cpu")
    assert free is None or free > 0
    with pytest.raises(ValueError, match="bytes_per_item"):
        fit_chunk(0, available=10)
    with pytest.raises(ValueError, match="fraction"):
        fit_chunk(10, available=10, fraction=0.0)


def test_game_chunks_follow_the_memory_and_the_trial_size():
    params = {"w": torch.zeros(10, 4)}
    small, large = torch.zeros(8, 16, 4), torch.zeros(8, 16, 400)
    assert _chunk(small, params, budget=2**20) > _chunk(large, params, budget=2**20) >= 64
    assert _chunk(small, params, budget=2**24) > _chunk(small, params, budget=2**20)


def test_chunked_release_equals_one_call():
    model = leaklab.build_model("mlp", (6,), 3, hidden=(5,), seed=0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(150, 4, 6, generator=gen), torch.randint(3, (150, 4), generator=gen)
    whole = release_gradients(model, xs, ys, params, chunk=1000)
    parts = release_gradients(model, xs, ys, params, chunk=64)
    for k in params:
        assert torch.allclose(whole[k], parts[k], atol=1e-6)
