"""Reconstruction through a defended release: static attacks ignore M, adaptive ones simulate it."""
import json

import pytest
import torch

from leaklab.attacks import run_reconstruction
from leaklab.attacks.optimization import matching_objective
from leaklab.cli import main
from leaklab.defenses import parse_defense

OPTS = dict(attack="idlg", model="mlp", dataset="digits", trials=3, iters=150, progress=False,
            model_options={"hidden": (32,), "activation": "sigmoid"})


def _median_psnr(**kw):
    return float(run_reconstruction(**OPTS, **kw).scores.psnr.median())


def test_adaptive_attack_walks_through_pruning_the_static_one_does_not():
    clean = _median_psnr()
    static = _median_psnr(defense="prune:ratio=0.5")
    adaptive = _median_psnr(defense="prune:ratio=0.5", adaptive=True)
    assert clean > 60
    assert static < clean - 20                 # pruning hurts an attack that ignores it
    assert adaptive > static + 20              # matching only the released entries undoes most of it


def test_a_release_independent_of_the_data_defeats_every_attack():
    # noise 1e3 times larger than any gradient entry: nothing left to match, static or adaptive
    for adaptive in (False, True):
        psnr = _median_psnr(defense="noise:std=1000", adaptive=adaptive)
        assert psnr < 15


def test_the_defense_and_adaptivity_are_in_the_record_and_the_config():
    run = run_reconstruction(**OPTS, defense="dp:clip=1,noise=0.5", adaptive=True)
    rec = run.to_record()
    assert rec.config["defense"] == {"name": "dp", "clip": 1.0, "noise": 0.5}
    assert rec.config["adaptive"] is True
    assert rec.numbers["privacy"]["accountant"] == "rdp"
    assert rec.numbers["privacy"]["epsilon"] == pytest.approx(parse_defense("dp:clip=1,noise=0.5").epsilon(delta=1e-5))
    other = run_reconstruction(**OPTS, defense="dp:clip=1,noise=0.5", adaptive=False).to_record()
    none = run_reconstruction(**OPTS).to_record()
    assert len({rec.key(), other.key(), none.key()}) == 3       # different settings, different resume keys


def test_reading_attacks_have_no_adaptive_variant():
    with pytest.raises(ValueError, match="no adaptive variant"):
        run_reconstruction(attack="analytic", model="mlp", dataset="digits", trials=2, progress=False,
                           defense="prune:ratio=0.5", adaptive=True)
    with pytest.raises(TypeError, match="adaptive must be"):
        run_reconstruction(**OPTS, adaptive="yes")


def test_adaptive_dp_matching_clips_the_dummy_gradient():
    torch.manual_seed(0)
    from leaklab import build_model
    from leaklab.release import release

    model = build_model("mlp", (1, 8, 8), 10, hidden=(8,), seed=0)
    x = torch.rand(1, 1, 1, 8, 8)
    y = torch.tensor([[3]])
    d = parse_defense("dp:clip=0.01,noise=0")
    g = {k: v[0] for k, v in release(model, x, y, defense=d).items()}
    params = {k: v.detach() for k, v in model.named_parameters()}
    v = x.flatten()
    for adaptive, expect_zero in ((True, True), (False, False)):
        f = matching_objective(model, input_shape=(1, 8, 8), batch_size=1, num_classes=10, joint_labels=False,
                               distance="l2", image_param="free", defense=d, adaptive=adaptive)
        loss = float(f(v, params, g, y[0]))
        # the true input matches the clipped release exactly only when the attack clips too
        assert (loss < 1e-10) == expect_zero


def test_cli_reconstruct_and_game_carry_the_defense(capsys):
    rc = main(["reconstruct", "--attack", "idlg", "--model", "mlp", "--dataset", "digits", "--trials", "2",
               "--iters", "20", "--defense", "dp:clip=1,noise=2", "--adaptive", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["defense"] == {"name": "dp", "clip": 1.0, "noise": 2.0} and out["adaptive"] is True
    assert out["accountant"] == "rdp" and out["delta"] == 1e-5 and 2.0 < out["epsilon"] < 2.3
    rc = main(["game", "attribute", "--dataset", "diabetes", "--trials", "40", "--defense", "sign", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["defense"] == {"name": "sign"} and out["adaptive"] is False
    assert "epsilon" not in out


@pytest.mark.parametrize("spec, words", [("dpp", "unknown defense 'dpp'"), ("dp:clipp=1", "no setting 'clipp'"),
                                         ("prune:ratio=2", "ratio must lie in")])
def test_cli_bad_defense_spec_is_one_line(capsys, spec, words):
    rc = main(["game", "attribute", "--dataset", "diabetes", "--defense", spec])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and err[0].startswith("leaklab")


def test_cli_defenses_list(capsys):
    assert main(["defenses", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["defenses"]
    assert {r["name"] for r in rows} == {"none", "prune", "sign", "noise", "dp", "perturb", "vib"}
    assert all(r["adaptive"] for r in rows)
