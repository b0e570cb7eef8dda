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
