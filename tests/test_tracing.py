"""Tracing (source inference): near-perfect among 8 clients at batch 1, at chance when clients are identical."""
import numpy as np
import pytest

from leaklab.data import load_dataset
from leaklab.games import play, play_tracing


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("adversary", ["alignment", "loss"])
def test_tracing_eight_clients_batch_one(digits, adversary):
    r = play("tracing", digits, adversary=adversary, clients=8, batch_size=1, trials=200, progress=False)
    s = r.score()
    assert s.accuracy >= 0.9, r                 # chance is 1/8
    assert s.accuracy <= 1.0 and s.auroc <= 1.0


@pytest.mark.parametrize("defense", [None, "noise:std=0.01"])
def test_identical_clients_are_at_chance(digits, defense):
    r = play_tracing(digits, clients=8, batch_size=2, trials=400, identical=True, defense=defense,
                     progress=False, seed=3)
    s = r.score()
    lo, hi = s.auroc_ci
    assert lo <= 0.5 <= hi, r
    # accuracy within a binomial 99.9% band around chance 1/8
    assert abs(s.accuracy - 1 / 8) <= 3.3 * np.sqrt(1 / 8 * 7 / 8 / 400)


def test_tracing_weakens_with_batch_size(digits):
    small = play_tracing(digits, clients=4, batch_size=1, trials=200, progress=False).score().accuracy
    large = play_tracing(digits, clients=4, batch_size=32, trials=200, progress=False).score().accuracy
    assert large < small
    assert large > 0.25                         # still above chance 1/4


def test_tracing_record_and_errors(digits):
    r = play_tracing(digits, clients=3, trials=30, progress=False)
    rec = r.record()
    assert rec.config["clients"] == 3 and rec.kind == "game/tracing"
    with pytest.raises(ValueError, match="clients"):
        play_tracing(digits, clients=1, progress=False)
    with pytest.raises(ValueError, match="unknown tracing adversary"):
        play_tracing(digits, adversary="lira", progress=False)


def test_cli_tracing_and_membership(capsys):
    import json

    from leaklab.cli import main

    assert main(["game", "tracing", "--dataset", "digits", "--clients", "4", "--trials", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clients"] == 4 and out["chance"] == 0.25 and out["results"][0]["accuracy"] > 0.5
    assert main(["game", "membership", "--dataset", "digits", "--trials", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["observe"] == "release" and out["adversary"] == "alignment"
    assert main(["game", "membership", "--dataset", "digits", "--clients", "3"]) == 2
    assert "--clients belongs to the tracing game" in capsys.readouterr().err
    assert main(["game", "tracing", "--dataset", "digits", "--adversary", "lira"]) == 2
    assert "does not play the tracing game" in capsys.readouterr().err


# -- FedAvg releases -----------------------------------------------------------------------------------

def test_local_updates_match_a_loop_of_sgd_steps(digits):
    """The batched FedAvg update of each client against plain autograd SGD, one client at a time."""
    import torch

    from leaklab.fl import parameters_of
    from leaklab.games.tracing import local_updates
    from leaklab.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(16,), seed=0)
    theta = parameters_of(model)
    xs, ys = digits.x[:12].reshape(4, 3, 1, 8, 8), digits.y[:12].reshape(4, 3)
    params = {k: v[None].expand(4, *v.shape) for k, v in theta.items()}
    lr, steps = 0.3, 3
    g = local_updates(model, xs, ys, params, steps=steps, lr=lr)
    for i in range(4):
        local = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        for _ in range(steps):
            out = torch.func.functional_call(model, local, (xs[i],))
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(out, ys[i]), list(local.values()))
            local = {k: (v - lr * d).detach().requires_grad_(True) for (k, v), d in zip(local.items(), grads)}
        for k in theta:
            torch.testing.assert_close(g[k][i], (theta[k] - local[k].detach()) / lr, rtol=1e-4, atol=1e-6)
    one = local_updates(model, xs, ys, params, steps=1, lr=lr)
    from leaklab.release import release
    plain = release(model, xs, ys)
    for k in plain:
        torch.testing.assert_close(one[k], plain[k], rtol=1e-4, atol=1e-6)


def test_fedavg_tracing_beats_chance_and_identical_clients_stay_at_chance(digits):
    r = play_tracing(digits, clients=8, batch_size=1, trials=200, local_steps=3, lr=0.1, progress=False)
    assert r.score().accuracy >= 0.9 and r.config["protocol"] == "fedavg" and r.config["local_steps"] == 3
    loss = play_tracing(digits, adversary="loss", clients=8, batch_size=1, trials=200, local_steps=3, lr=0.1,
                        progress=False)
    assert loss.score().accuracy >= 0.6                 # 0.815 measured: the clients' own local models (chance 1/8)
    null = play_tracing(digits, clients=8, batch_size=2, trials=400, identical=True, local_steps=3, progress=False,
                        seed=3).score()
    lo, hi = null.auroc_ci
    assert lo <= 0.5 <= hi
    assert abs(null.accuracy - 1 / 8) <= 3.3 * np.sqrt(1 / 8 * 7 / 8 / 400)


def test_one_local_step_is_fedsgd_and_the_cli_takes_local_steps(digits, capsys):
    import json

    from leaklab.cli import main

    a = play_tracing(digits, clients=4, trials=40, progress=False).round_scores
    b = play_tracing(digits, clients=4, trials=40, local_steps=1, progress=False).round_scores
    assert np.array_equal(a, b)
    assert main(["game", "tracing", "--dataset", "digits", "--clients", "4", "--trials", "40", "--local-steps", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["local_steps"] == 2 and out["results"][0]["accuracy"] > 0.5
    assert main(["game", "membership", "--dataset", "digits", "--local-steps", "2"]) == 2
    assert "--local-steps belongs to the tracing game" in capsys.readouterr().err
    with pytest.raises(ValueError, match="local_steps must be"):
        play_tracing(digits, clients=4, local_steps=0, progress=False)


def test_only_the_secret_client_holds_the_target():
    import torch

    from leaklab.data import load_dataset
    from leaklab.games import make_game

    data = load_dataset("digits").subset(torch.arange(30))
    game = make_game("tracing", data.info, clients=8)
    g = torch.Generator().manual_seed(0)
    tr = game.draw_trials(data, 500, g)
    idx = game.draw_batches(data, tr, 4, g)                              # (T, n, B)
    hits = (idx == tr.target[:, None, None]).sum(2)                      # (T, n): the target's copies per client
    assert (hits[torch.arange(500), tr.secret] == 1).all()               # once in the secret client's batch
    hits[torch.arange(500), tr.secret] = 0
    assert int(hits.sum()) == 0                                          # and in no other client's
    assert (idx >= 0).all() and (idx < len(data)).all()
