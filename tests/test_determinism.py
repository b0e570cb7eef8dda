"""Same seed, same numbers: a stochastic model (VIB) repeats exactly, in one process and across processes.

A stochastic model samples under ``vmap(randomness="different")``, which draws from
torch's global RNG; every such draw must come from a seeded generator, so that a result
depends on its seed alone, not on what ran before it in the process (another chapter's
cells, another game), nor on how many trials fit in memory at once.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import leaklab
from leaklab import fl, games
from leaklab.defenses import parse_defense
from leaklab.federated import train_federated
from leaklab.release import SAMPLING_BLOCK, release

ROOT = Path(__file__).resolve().parent.parent
VIB = "vib:beta=0.01"


def _game(adaptive: bool):
    r = games.play("attribute", "diabetes", adversary="informed", batch_size=4, trials=32, defense=VIB,
                   adaptive=adaptive, adversary_options={"sims": 4}, seed=3, progress=False)
    return np.asarray(r.round_scores, dtype=np.float64)


def _training():
    digits = leaklab.load_dataset("digits")
    train, test = digits.split(0.3, seed=0)
    d = parse_defense(VIB)
    model = d.wrap(leaklab.build_model("mlp", digits.input_shape, 10, hidden=(16,), seed=0))
    fl.train(model, train, steps=6, lr=0.1, defense=d, seed=0, progress=False)
    fed = d.wrap(leaklab.build_model("mlp", digits.input_shape, 10, hidden=(16,), seed=0))
    run = train_federated(fed, train, test=test, clients=4, rounds=4, defense=d, seed=0, progress=False)
    params = torch.cat([p.detach().flatten() for p in list(model.parameters()) + list(fed.parameters())])
    return np.asarray(params, dtype=np.float64), fl.accuracy(model, test), run.accuracy


def _everything():
    """Numbers of a static and an adaptive VIB game, and of VIB trained alone and federated."""
    params, acc, fed_acc = _training()
    return {"static": _game(False).tolist(), "adaptive": _game(True).tolist(),
            "params": params.tolist(), "accuracy": acc, "federated accuracy": fed_acc}


def _other_work():
    """What a chapter might run between two cells: another VIB game, and draws from the global RNG."""
    torch.manual_seed(12345)
    torch.rand(1000)
    games.play("attribute", "diabetes", adversary="informed", batch_size=2, trials=16, defense="vib:beta=1.0",
               seed=0, progress=False)
    torch.randn(77)


@pytest.fixture(scope="module")
def reference():
    return json.loads(json.dumps(_everything()))


def test_a_vib_game_and_training_repeat_in_one_process(reference):
    _other_work()
    before = torch.get_rng_state().clone()
    again = json.loads(json.dumps(_everything()))
    assert again == reference                          # exactly: not within a tolerance
    # every draw came from a seeded generator: the caller's global RNG state was not consumed
    assert torch.equal(torch.get_rng_state(), before)


def test_a_vib_game_and_training_repeat_across_processes(reference):
    """Two fresh interpreters, each with another global seed, print this process's numbers."""
    script = ("import json, sys, torch; torch.manual_seed(int(sys.argv[1])); sys.path.insert(0, sys.argv[2]);"
              "import test_determinism as t; print(json.dumps(t._everything()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "LEAKLAB_PROGRESS": "0"}
    runs = [subprocess.Popen([sys.executable, "-c", script, global_seed, str(ROOT / "tests")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for global_seed in ("1", "2")]
    outs = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0] == outs[1] == reference


def test_vib_really_samples(reference):
    """The repeats above are not trivial: VIB's release is random, and another seed gives another one."""
    model = parse_defense(VIB).wrap(leaklab.build_model("mlp", (10,), 3, hidden=(8,), seed=0))
    xs, ys = torch.randn(4, 2, 10), torch.randint(3, (4, 2))
    xs[1], ys[1] = xs[0], ys[0]                          # trials 0 and 1 release the same batch
    a = release(model, xs, ys, generator=torch.Generator().manual_seed(0))
    b = release(model, xs, ys, generator=torch.Generator().manual_seed(0))
    c = release(model, xs, ys, generator=torch.Generator().manual_seed(1))
    w = "encoder.weight"
    assert torch.equal(a[w], b[w])
    assert not torch.equal(a[w], c[w])
    assert not torch.equal(a[w][0], a[w][1])             # each trial draws its own noise
    assert np.std(reference["static"]) > 0


def test_a_stochastic_release_does_not_depend_on_the_chunk():
    """How many trials fit in memory at once (the chunk) does not change any trial's draws."""
    model = parse_defense(VIB).wrap(leaklab.build_model("mlp", (6,), 3, hidden=(8,), seed=0))
    T = 2 * SAMPLING_BLOCK + 5
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(T, 2, 6, generator=g), torch.randint(3, (T, 2), generator=g)
    full = release(model, xs, ys, generator=torch.Generator().manual_seed(7), chunk=T)
    for chunk in (SAMPLING_BLOCK, SAMPLING_BLOCK + 9, 3 * SAMPLING_BLOCK):
        part = release(model, xs, ys, generator=torch.Generator().manual_seed(7), chunk=chunk)
        assert all(torch.equal(full[k], part[k]) for k in full), chunk


def test_a_stochastic_release_needs_a_generator():
    model = parse_defense(VIB).wrap(leaklab.build_model("mlp", (6,), 3, hidden=(8,), seed=0))
    with pytest.raises(ValueError, match="generator="):
        release(model, torch.randn(2, 2, 6), torch.randint(3, (2, 2)))
