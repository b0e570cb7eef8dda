"""A malicious server: the imprint block and trap weights, read through the release path."""
import doctest
import importlib
import json

import pytest
import torch

import leaklab
from leaklab.attacks import get_attack, list_attacks, run_imprint
from leaklab.attacks.imprint import (ImprintBlock, ImprintModel, bin_differences, expected_alone_share,
                                     imprint_model, trap_weights)
from leaklab.attacks.malicious import reads_through
from leaklab.cli import main
from leaklab.fl import per_sample_gradients, secure_sum
from leaklab.inspection import inspect_model
from leaklab.release import release


@pytest.fixture(scope="module")
def digits():
    return leaklab.load_dataset("digits")


def _alone_from_statistic(net: ImprintModel, x: torch.Tensor) -> torch.Tensor:
    """Records alone in their bin, from the statistic and the thresholds alone (no gradient, no leaklab helper)."""
    w, b = net.imprint.measure.weight.detach().double(), net.imprint.measure.bias.detach().double()
    s = x.flatten(-3).double() @ w[0]                       # (..., B): every row measures the same number
    c = (-b / w.norm(dim=1) * w[0].norm()).sort().values    # thresholds in the units of s
    bin_ = (s.unsqueeze(-1) > c).sum(-1)                    # 0 = below every threshold
    same = (bin_.unsqueeze(-1) == bin_.unsqueeze(-2)).sum(-1)
    return (same == 1) & (bin_ > 0)


def test_registered_and_documented():
    assert {"imprint", "trap"} <= set(list_attacks())
    for name in ("leaklab.attacks.imprint", "leaklab.attacks.malicious", "leaklab.inspection"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, name


def test_row_differences_are_the_records_of_each_bin(digits):
    """Oracle: row k minus row k+1 of the release is the sum of the per-record gradients of bin k's records."""
    net = imprint_model(leaklab.build_model("mlp", digits.input_shape, 10, seed=0), digits.x[1000:], bins=16, seed=0)
    x, y = digits.x[:24], digits.y[:24]
    g = release(net, x[None], y[None])
    dw, db = bin_differences(g["imprint.measure.weight"][0].double(), g["imprint.measure.bias"][0].double())
    per = per_sample_gradients(net, x, y)
    bins = (x.flatten(1).double() @ net.imprint.measure.weight.detach().double().T
            + net.imprint.measure.bias.detach().double() > 0).sum(1)            # (B,) units each record fires
    for k in range(16):
        members = bins == k + 1
        want_w = per["imprint.measure.weight"][members, k].double().sum(0) / len(x)
        want_b = per["imprint.measure.bias"][members, k].double().sum(0) / len(x)
        assert torch.allclose(dw[k], want_w, atol=1e-9, rtol=1e-4), k
        assert torch.allclose(db[k], want_b, atol=1e-9, rtol=1e-4), k


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_fedsgd_recovers_every_record_alone_in_a_bin_exactly(model):
    run = run_imprint(model=model, dataset="digits", batch_size=64, bins=128, trials=2, seed=0)
    alone = run.extra["alone"]
    assert alone.shape == (2, 64)
    share_alone = float(alone.float().mean())
    assert share_alone >= 0.45                                        # (1 - 1/128)^63 = 0.61 for equal bins
    recovered = run.extra["recovered"]                                # some slot reproduces it at >= 30 dB
    assert bool(recovered[alone].all())                               # every lone record is recovered ...
    assert float(recovered.float().mean()) >= share_alone
    assert bool((run.extra["nearest_mse"][alone] < 1e-8).all())       # ... exactly
    assert run.scores.success_rate(30.0) >= 0.5                       # the target, after one-to-one matching
    exact = run.result.info["exact"]                                  # certified slots ...
    for t in range(2):
        xh = run.result.x[t][exact[t]].flatten(1).double()
        nearest = torch.cdist(xh, run.x[t].flatten(1).double()).min(1)
        assert bool((nearest.values ** 2 / 64 < 1e-8).all())          # ... are private records
        lone = set(alone[t].nonzero().flatten().tolist())
        assert set(nearest.indices.tolist()) <= lone                  # only lone records are certified (no mixture)
        assert len(set(nearest.indices.tolist())) >= 0.9 * len(lone)  # and nearly all of them
        labels = run.result.info["labels"][t][exact[t]]
        assert bool((labels == run.y[t][nearest.indices]).all())      # with their labels


def test_alone_share_from_the_statistic_matches_the_run_and_the_formula(digits):
    net = imprint_model(leaklab.build_model("mlp", digits.input_shape, 10, seed=0), digits.x[:600], bins=128, seed=3)
    gen = torch.Generator().manual_seed(0)
    xs = torch.stack([digits.x[600:][torch.randperm(1197, generator=gen)[:64]] for _ in range(40)])
    share = float(_alone_from_statistic(net, xs).float().mean())
    assert abs(share - expected_alone_share(64, 128)) < 0.08           # nearly equal-mass bins
    u = torch.randint(128, (4000, 64), generator=gen)                   # exactly equal bins: the formula
    mc = float(((u[:, :, None] == u[:, None, :]).sum(-1) == 1).float().mean())
    assert abs(mc - expected_alone_share(64, 128)) < 0.01


def test_null_case_all_bins_shared_recovers_nothing_and_says_so(digits):
    x, y = digits.x[:32], digits.y[:32]
    base = leaklab.build_model("mlp", digits.input_shape, 10, seed=0)
    net = imprint_model(base, digits.x[1000:], bins=16, seed=0)
    w = net.imprint.measure.weight.detach()[0].double()
    s = (x.flatten(1).double() @ w).sort().values
    # thresholds between the 2nd and 3rd, 4th and 5th, ... record: every bin holds exactly two records
    c = torch.cat([s[:1] - 1, (s[1:-1:2] + s[2::2]) / 2])
    with torch.no_grad():
        net.imprint.measure.bias.copy_((-c).float())
    assert not bool(_alone_from_statistic(net, x).any())
    g = release(net, x[None], y[None])
    params = {k: v.detach()[None] for k, v in net.named_parameters()}
    rec = get_attack("imprint")(net, params, g, input_shape=digits.input_shape, num_classes=10, batch_size=32)
    assert int(rec.info["recovered"].sum()) == 0                        # it says so
    from leaklab.metrics.image import score_images

    # a mixture of two records is near one of them only when the other's error delta is nearly zero (a record the
    # model already fits): rare, and never certified
    assert score_images(x[None], rec.x).success_rate(30.0) <= 0.1


def test_dp_noise_one_recovers_nothing():
    run = run_imprint(dataset="digits", batch_size=64, bins=128, trials=2, seed=0, defense="dp:clip=1,noise=1")
    assert run.scores.success_rate(30.0) == 0.0
    assert int(run.result.info["recovered"].sum()) == 0
    assert run.extra["reads"] == "no" and run.extra["privacy"]["epsilon"] > 0


def test_secure_aggregation_is_a_larger_batch_and_fedavg_one_step_reads_the_same():
    run = run_imprint(dataset="digits", batch_size=16, bins=64, clients=4, secure=True, trials=1, seed=1)
    assert run.x.shape[:2] == (1, 64)                                   # the sum of four clients: 64 records
    alone = run.extra["alone"]
    assert float(alone.float().mean()) > 0.2
    assert bool((run.extra["nearest_mse"][alone] < 1e-8).all())       # every lone record of the sum, exactly
    assert run.scores.success_rate(30.0) >= 0.3
    assert reads_through(secure=True)[0] == "exact"
    avg = run_imprint(dataset="digits", batch_size=32, bins=64, protocol="fedavg", local_steps=1, trials=1, seed=1)
    alone = avg.extra["alone"]
    assert float(alone.float().mean()) > 0.3
    assert bool(avg.extra["recovered"][alone].all())
    assert int(avg.result.info["recovered"].sum()) >= 0.8 * int(alone.sum())
    several = run_imprint(dataset="digits", batch_size=32, bins=64, protocol="fedavg", local_steps=3, trials=1, seed=1)
    assert several.extra["reads"] == "approximate"
    assert 0.2 <= several.extra["recovered_share"] <= 1.0             # still read, though no longer certified
    assert several.extra["certified_share"] < avg.extra["certified_share"]


def test_secure_sum_is_what_the_attack_reads(digits):
    net = imprint_model(leaklab.build_model("mlp", digits.input_shape, 10, seed=0), digits.x[1000:], bins=8)
    xs, ys = digits.x[:12].reshape(3, 4, 1, 8, 8), digits.y[:12].reshape(3, 4)
    g = release(net, xs, ys)
    total = secure_sum([{k: v[i] for k, v in g.items()} for i in range(3)])
    for k in g:
        assert torch.allclose(total[k], g[k].sum(0))


def test_sign_defense_reads_nothing():
    run = run_imprint(dataset="digits", batch_size=32, bins=64, trials=1, seed=0, defense="sign")
    assert run.scores.success_rate(30.0) == 0.0 and run.extra["reads"] == "no"


def test_trap_weights_fit_an_mlp_and_are_refused_for_a_convnet(digits):
    run = run_imprint(attack="trap", dataset="digits", batch_size=32, trials=1, seed=0,
                      model_options={"hidden": (256,)})
    exact = run.result.info["exact"][0]
    assert int(exact.sum()) >= 8
    xh = run.result.x[0][exact].flatten(1).double()
    assert bool((torch.cdist(xh, run.x[0].flatten(1).double()).min(1).values ** 2 / 64 < 1e-6).all())
    with pytest.raises(ValueError, match="imprint block in front"):
        trap_weights(leaklab.build_model("convnet", digits.input_shape, 10), digits.x[:100], rate=0.1)


def test_inspect_flags_malicious_models_and_not_honest_ones(digits):
    x = digits.x[:64]
    for name in ("mlp", "convnet", "lenet"):
        honest = leaklab.build_model(name, digits.input_shape, 10, seed=0)
        assert inspect_model(honest, x) == []
        kinds = [f.kind for f in inspect_model(imprint_model(honest, digits.x[1000:], bins=64), x)]
        assert kinds == ["imprint"]
    trap = trap_weights(leaklab.build_model("mlp", digits.input_shape, 10, seed=0), digits.x[1000:], rate=1 / 64)
    assert [f.kind for f in inspect_model(trap, x)] == ["trap"]
    assert inspect_model(trap) == []                  # without its own records the client cannot see traps


def test_bad_inputs_name_the_argument(digits):
    honest = leaklab.build_model("mlp", digits.input_shape, 10)
    params = {k: v.detach()[None] for k, v in honest.named_parameters()}
    g = release(honest, digits.x[:2][None], digits.y[:2][None])
    with pytest.raises(ValueError, match="imprint block"):
        get_attack("imprint")(honest, params, g, input_shape=(1, 8, 8), num_classes=10, batch_size=2)
    with pytest.raises(ValueError, match="unknown statistic"):
        imprint_model(honest, digits.x[:10], bins=4, statistic="median")
    with pytest.raises(ValueError, match="bins must be >= 2"):
        ImprintBlock((1, 8, 8), 1)
    with pytest.raises(ValueError, match="clients x batch_size"):
        run_imprint(dataset="digits", batch_size=1000, clients=2)
    with pytest.raises(ValueError, match="rate must be"):
        trap_weights(honest, digits.x[:10], rate=1.5)


def _cli(capsys, *argv):
    code = main(["reconstruct", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_and_errors(capsys):
    code, out, err = _cli(capsys, "--attack", "imprint", "--model", "mlp", "--dataset", "digits", "--batch-size",
                          "16", "--bins", "64", "--clients", "2", "--secure", "--trials", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["clients"] == 2 and data["config"]["secure"] is True
    assert len(data["trials"]) == 1 and len(data["trials"][0]["psnr_records"]) == 32
    s = data["summary"]
    assert 0 <= s["certified_share"] <= s["share_recovered_30db"] + 1e-9 and s["reads"] == "exact"
    code, out, err = _cli(capsys, "--attack", "imprint", "--model", "convnet", "--dataset", "digits",
                          "--batch-size", "8", "--bins", "16", "--trials", "1", "--defense", "dp:clip=1,noise=1")
    assert code == 0, err
    assert "reads through it: no" in out and "share recovered at PSNR >= 30 dB: 0.0%" in out
    for argv, msg in [(["--attack", "dlg", "--model", "mlp", "--dataset", "digits", "--bins", "8"],
                       "--bins only go with --attack imprint or trap"),
                      (["--attack", "imprint", "--model", "mlp", "--dataset", "digits", "--bins", "1"],
                       "expected at least 2 bins"),
                      (["--attack", "trap", "--model", "convnet", "--dataset", "digits"], "imprint block in front")]:
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and msg in err and err.count("\n") == 1, err
