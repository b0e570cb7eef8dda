"""The trade-off sweep: resumable without losing, tearing or duplicating a record; privacy-loss scale; utility."""
import json
import math

import pytest
import torch

from leaklab.cli import main
from leaklab.data import load_dataset
from leaklab.defenses import parse_defense
from leaklab.federated import train_federated
from leaklab.metrics.privacy_loss import membership_loss, privacy_loss, reconstruction_loss, tracing_loss
from leaklab.models import build_model
from leaklab.results import Record, resume_records, write_records
from leaklab.tradeoff import RECORDS_FILE, compare_at_equal_loss, expand_defenses, gap_at_equal_loss, sweep_tradeoff

SMALL = {"records": 300, "rounds": 3, "attack_trials": 16, "clients": 4, "hidden": 16}
DEFENSES = "dp:clip=1,noise=0/2;prune:ratio=0.9"
ATTACKS = ("reconstruction", "membership")


class Killed(Exception):
    pass


def _run(out, on_record=None):
    return sweep_tradeoff("digits", DEFENSES, attacks=ATTACKS, out=out, settings=SMALL, seeds=1,
                          progress=False, on_record=on_record)


def _strip(records):
    """What must not depend on the interruption: everything but the times."""
    return sorted((r.key(), json.dumps(r.numbers, sort_keys=True)) for r in records)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("full"))


def test_sweep_writes_one_record_per_point(uninterrupted):
    assert len(uninterrupted) == 3 * len(ATTACKS)
    assert len({r.key() for r in uninterrupted}) == len(uninterrupted)
    for r in uninterrupted:
        assert 0.0 <= r.numbers["privacy_loss"] <= 1.0
        assert 0.0 <= r.numbers["accuracy"] <= 1.0


@pytest.mark.parametrize("k", [1, 4])
def test_killed_sweep_resumes_with_exactly_the_missing_records(tmp_path, uninterrupted, k):
    seen = []

    def kill(rec):
        seen.append(rec)
        if len(seen) == k:
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, on_record=kill)
    assert len(resume_records(tmp_path / RECORDS_FILE)) == k
    written = []
    final = _run(tmp_path, on_record=written.append)
    assert len(written) == len(uninterrupted) - k          # only the missing ones
    assert _strip(final) == _strip(uninterrupted)
    lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
    assert len(lines) == len(uninterrupted)                # nothing duplicated


def test_torn_last_line_is_discarded_and_measured_again(tmp_path, uninterrupted):
    path = tmp_path / RECORDS_FILE
    write_records(path, uninterrupted[:2])
    whole = uninterrupted[2].to_json()
    with open(path, "a") as f:
        f.write(whole[: len(whole) // 2])                   # killed while writing the third record
    written = []
    final = _run(tmp_path, on_record=written.append)
    assert len(written) == len(uninterrupted) - 2
    assert _strip(final) == _strip(uninterrupted)
    for line in path.read_text().splitlines():
        json.loads(line)                                   # every line whole


def test_resume_records_refuses_a_bad_line_in_the_middle(tmp_path, uninterrupted):
    path = tmp_path / "x.jsonl"
    path.write_text(uninterrupted[0].to_json() + "\n{not json\n" + uninterrupted[1].to_json() + "\n")
    with pytest.raises(ValueError, match="line 2"):
        resume_records(path)


def test_resume_key_holds_defense_and_adaptive():
    a = Record(kind="tradeoff", config={"defense": {"name": "dp", "noise": 1.0}, "adaptive": False}, seed=0, numbers={})
    b = Record(kind="tradeoff", config={"defense": {"name": "dp", "noise": 1.0}, "adaptive": True}, seed=0, numbers={})
    c = Record(kind="tradeoff", config={"defense": {"name": "dp", "noise": 2.0}, "adaptive": False}, seed=0, numbers={})
    assert len({a.key(), b.key(), c.key()}) == 3


def test_dp_costs_accuracy_and_privacy_in_the_sweep(uninterrupted):
    by = {(r.config["defense"]["name"], r.config["strength"], r.config["attack"]): r.numbers for r in uninterrupted}
    # without noise (clipping only) a single record is read back exactly; with noise it is not
    assert by[("dp", 0.0, "reconstruction")]["privacy_loss"] > 0.9
    assert by[("dp", 2.0, "reconstruction")]["privacy_loss"] < 0.2
    assert by[("dp", 0.0, "reconstruction")]["epsilon_training"] == float("inf")
    assert by[("dp", 0.0, "membership")]["epsilon_attacked"] == float("inf")
    assert by[("dp", 2.0, "membership")]["epsilon_training_accountant"] == "rdp"


def test_sweep_records_the_training_and_the_attacked_epsilon(uninterrupted):
    """The training epsilon (q = batch/shard over every local step) and the attacked release's (q = 1, the
    target present: add/remove for reconstruction, replace-one for membership) are both kept, named."""
    d = parse_defense("dp:clip=1,noise=2")
    shard = int(SMALL["records"] * 0.7) // SMALL["clients"]
    train = d.epsilon(delta=1e-5, sample_rate=16 / shard, steps=SMALL["rounds"] * 3)
    one = d.privacy(delta=1e-5, sample_rate=1.0, steps=1)
    by = {(r.config["strength"], r.config["attack"]): r.numbers for r in uninterrupted if r.config["family"] == "dp"}
    rec, mem = by[(2.0, "reconstruction")], by[(2.0, "membership")]
    for n in (rec, mem):
        assert n["epsilon_training"] == pytest.approx(train, rel=1e-9)
        assert "Poisson" in n["epsilon_training_sampling"] and "fixed size" in n["epsilon_training_sampling"]
    assert rec["epsilon_attacked"] == pytest.approx(one["epsilon"], rel=1e-9)
    assert mem["epsilon_attacked"] == pytest.approx(one["epsilon_replace"], rel=1e-9)
    assert mem["epsilon_attacked"] > rec["epsilon_attacked"]          # replace-one moves the sum by 2 clip
    assert "replace" in mem["epsilon_attacked_neighbours"] and "add/remove" in rec["epsilon_attacked_neighbours"]
    assert rec["epsilon_attacked"] != pytest.approx(rec["epsilon_training"], rel=1e-3)
    # what the membership advantage can reach under (epsilon, delta)-DP, on the attacked release
    e = mem["epsilon_attacked"]
    assert mem["attack_heldout_advantage"] <= (math.exp(e) - 1 + 2e-5) / (math.exp(e) + 1)


def test_plot_labels_each_dp_point_with_the_attacked_epsilon(uninterrupted):
    import matplotlib
    matplotlib.use("Agg")
    from leaklab.tradeoff import plot_tradeoff

    fig = plot_tradeoff(uninterrupted)
    panels = {ax.get_xlabel(): ax for ax in fig.axes}
    for attack in ATTACKS:
        n = next(r.numbers for r in uninterrupted if r.config["attack"] == attack and r.config["strength"] == 2.0)
        texts = {t.get_text() for t in panels[f"privacy loss ({attack})"].texts}
        assert f"ε={n['epsilon_attacked']:.3g}" in texts and f"ε={n['epsilon_training']:.3g}" not in texts
        assert "attacked release" in panels[f"privacy loss ({attack})"].get_title()


def test_null_release_scores_within_its_null_interval_for_every_attack(tmp_path):
    """DP with noise 1e4: the releases carry nothing, and every attack's privacy loss lies in its 95% null
    interval, an interval near 0 (the old scales gave the mean SSIM of unrelated images, about 0.08 here,
    and the advantage maximised on the trials themselves)."""
    from scipy import stats

    settings = {**SMALL, "attack_trials": 64, "attack_iters": 10}
    recs = sweep_tradeoff("digits", "dp:clip=1,noise=10000", attacks=("reconstruction", "membership", "tracing"),
                          out=tmp_path, settings=settings, progress=False)
    assert [r.config["attack"] for r in recs] == ["reconstruction", "membership", "tracing"]
    for r in recs:
        lo, hi = r.numbers["privacy_loss_null"]
        assert 0.0 <= lo <= r.numbers["privacy_loss"] <= hi < 0.3, (r.config["attack"], r.numbers)
    rec, mem, tra = (r.numbers for r in recs)
    assert rec["attack_ssim"] > 0.03                  # unrelated digits share structure: the floor is real ...
    assert rec["privacy_loss"] < rec["attack_ssim"]   # ... and subtracted
    assert abs(mem["attack_heldout_advantage"]) <= hi
    k = stats.binom.ppf(0.975, 64, 1 / 4)
    assert tra["privacy_loss_null"][1] == pytest.approx((k / 64 - 1 / 4) / (3 / 4))
    p = parse_defense("dp:clip=1,noise=10000").privacy(delta=1e-5, sample_rate=1.0, steps=2)
    assert tra["epsilon_attacked"] == pytest.approx(p["epsilon_replace"], rel=1e-9)


def test_sweep_membership_loss_reads_the_scores_not_the_adversary_threshold(tmp_path, monkeypatch):
    """Shift every membership score by +100: the adversary's own threshold (0) then calls every trial a member
    (accuracy = the share of members, advantage 0 at that threshold), but the scores rank members as well as
    before: the privacy loss, a held-out threshold's advantage, must not move."""
    import leaklab.games.membership as gm
    from leaklab.metrics.privacy_loss import membership_loss as loss

    original = gm.play_membership
    seen = []

    def shifted(*a, **kw):
        r = original(*a, **kw)
        r.round_scores = r.round_scores + 100.0
        seen.append(r)
        return r

    monkeypatch.setattr(gm, "play_membership", shifted)
    rec = sweep_tradeoff("digits", "none", attacks=("membership",), out=tmp_path,
                         settings={**SMALL, "attack_trials": 64}, progress=False)[0]
    r = seen[0]
    assert abs(2 * rec.numbers["attack_accuracy"] - 1) < 0.3             # the shifted threshold guesses blindly
    assert rec.numbers["privacy_loss"] == pytest.approx(loss(r.secret, r.scores() - 100.0, seed=1000))
    assert rec.numbers["privacy_loss"] > 0.3                             # undefended, batch of 8: it leaks
    assert rec.numbers["privacy_loss"] > rec.numbers["privacy_loss_null"][1]


def test_heldout_advantage_has_no_floor_on_scores_that_carry_nothing():
    """The advantage maximised over thresholds on the trials themselves is biased upwards; chosen on held-out
    trials it is 0 on average, and the permutation null interval covers it."""
    import numpy as np

    from leaklab.metrics.classification import advantage
    from leaklab.metrics.privacy_loss import heldout_advantage, membership_null

    rng = np.random.default_rng(0)
    same, held, inside = [], [], 0
    for _ in range(40):
        y, s = rng.integers(2, size=128), rng.normal(size=128)
        same.append(advantage(y, s))
        held.append(heldout_advantage(y, s, seed=1))
        inside += membership_loss(y, s, seed=1) <= membership_null(y, s, permutations=200, seed=2)[1]
    assert np.mean(same) > 0.08 and abs(np.mean(held)) < 0.03
    assert inside >= 34                                   # 95% coverage, 40 draws
    y = rng.integers(2, size=128)
    assert membership_loss(y, y + 0.01 * rng.normal(size=128)) == 1.0    # perfectly separated: 1
    with pytest.raises(ValueError, match="one value per trial"):
        membership_loss(y, np.zeros(3))


def test_compare_at_equal_loss_reads_the_curve_as_a_step_function():
    """At a level between two measured points the best accuracy is that of the points at or below it:
    a line to the next point would promise an accuracy measured nowhere at that loss."""
    recs = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for pl, acc in ((0.0, 0.2), (0.5, 0.6), (1.0, 0.5)):
            recs.append(Record(kind="tradeoff", config={"attack": "membership", "family": "dp"}, seed=seed,
                               numbers={"privacy_loss": pl, "accuracy": acc + shift}))
    rows = {r["privacy_loss"]: r for r in compare_at_equal_loss(recs, levels=(0.25, 0.5, 0.75))}
    assert rows[0.25]["accuracy"] == pytest.approx(0.25)      # only the points at loss 0: 0.2 and 0.3
    assert rows[0.5]["accuracy"] == pytest.approx(0.65)
    assert rows[0.75]["accuracy"] == pytest.approx(0.65)      # the best so far, not the dip to 0.5
    lo, hi = rows[0.25]["ci"]
    assert lo < 0.25 < hi
    for L, row in rows.items():                              # never above what was measured at that loss or below
        assert row["accuracy"] <= max(r.numbers["accuracy"] for r in recs if r.numbers["privacy_loss"] <= L) + 1e-12


def _custom(seed):
    import numpy as np

    from leaklab.data import Dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    return Dataset.from_arrays(x, y)                           # named "custom" both times


def test_resume_key_holds_the_data_used_not_its_name(tmp_path):
    a, b = _custom(0), _custom(1)
    assert a.name == b.name == "custom" and len(a) == len(b)
    settings = {**SMALL, "attack_trials": 16}
    first = sweep_tradeoff(a, "sign", attacks=("membership",), out=tmp_path, settings=settings, progress=False)
    written = []
    second = sweep_tradeoff(b, "sign", attacks=("membership",), out=tmp_path, settings=settings, progress=False,
                            on_record=written.append)
    assert len(written) == 1                                   # measured, not read back from the other data
    assert first[0].config["data"]["sha256"] != second[0].config["data"]["sha256"]
    assert first[0].numbers != second[0].numbers
    assert len(resume_records(tmp_path / RECORDS_FILE)) == 2
    again = []
    third = sweep_tradeoff(a, "sign", attacks=("membership",), out=tmp_path, settings=settings, progress=False,
                           on_record=again.append)
    assert again == [] and _strip(third) == _strip(first)      # the same data resumes


def test_resume_key_holds_adaptive_through_the_sweep(tmp_path):
    settings = {**SMALL, "attack_trials": 16}
    static = sweep_tradeoff("digits", "sign", attacks=("membership",), out=tmp_path, settings=settings,
                            progress=False)
    written = []
    adaptive = sweep_tradeoff("digits", "sign", attacks=("membership",), adaptive=True, out=tmp_path,
                              settings=settings, progress=False, on_record=written.append)
    assert len(written) == 1 and adaptive[0].config["adaptive"] is True and static[0].config["adaptive"] is False


def test_expand_defenses():
    pts = expand_defenses("dp:clip=1,noise=0.5/2;sign")
    assert [(f, k, v) for f, k, v, _ in pts] == [("dp", "noise", 0.5), ("dp", "noise", 2.0), ("sign", None, None)]
    assert pts[1][3].config() == {"name": "dp", "clip": 1.0, "noise": 2.0}
    with pytest.raises(ValueError, match="unknown defense"):
        expand_defenses("dpp")
    with pytest.raises(ValueError, match="at least one"):
        expand_defenses(" ; ")


def test_privacy_loss_scale():
    assert tracing_loss(1 / 8, clients=8) == 0.0 and tracing_loss(1.0, clients=8) == 1.0
    assert tracing_loss(0.0, clients=8) == 0.0                 # below chance is no leak, not negative
    secret = [0, 1] * 8
    assert membership_loss(secret, secret) == 1.0 and membership_loss(secret, [1 - v for v in secret]) == 0.0
    assert reconstruction_loss([1.0, 1.0]) == 1.0 and reconstruction_loss([-0.5, 0.0]) == 0.0
    assert reconstruction_loss([1.0, 1.0], [[0.3, 0.1], [0.2, 0.2]]) == 1.0        # exact copies: 1
    assert reconstruction_loss([0.2, 0.2], [[0.3, 0.1], [0.2, 0.2]]) == 0.0        # no better than decoys: 0
    assert reconstruction_loss([0.6, 0.6], [[0.2, 0.2], [0.2, 0.2]]) == pytest.approx(0.5)
    assert privacy_loss("membership", {"secret": secret, "scores": secret}) == 1.0
    with pytest.raises(ValueError, match="secret and scores"):
        privacy_loss("membership", {"advantage": 0.3})
    with pytest.raises(ValueError):
        membership_loss([0, 1, 2, 1], [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        reconstruction_loss([float("nan")])
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss([0.5, 0.5], [[0.1, 0.1]])
    with pytest.raises(ValueError, match="clients"):
        privacy_loss("tracing", {"accuracy": 0.5})


@pytest.mark.parametrize("protocol", ["fedsgd", "fedavg"])
@pytest.mark.parametrize("defense", [None, "sign", "prune:ratio=0.5", "spn:alpha=0.5,bits=8"])
def test_federated_clients_together_equal_one_at_a_time(protocol, defense):
    data = load_dataset("digits", n=300)
    out = []
    for engine in ("batched", "loop"):
        model = build_model("mlp", data.input_shape, data.num_classes, hidden=(16,), seed=0)
        out.append(train_federated(model, data, clients=4, rounds=3, protocol=protocol, local_steps=2,
                                   batch_size=8, defense=defense, engine=engine, progress=False))
    for k in out[0].params:
        torch.testing.assert_close(out[0].params[k], out[1].params[k], rtol=1e-4, atol=1e-5)


def test_federated_training_learns_and_dp_costs_accuracy():
    data = load_dataset("digits")
    test, train = data.split(0.3, seed=0)
    accs = {}
    for d in (None, "dp:clip=1,noise=8"):
        model = build_model("mlp", data.input_shape, data.num_classes, hidden=(32,), seed=0)
        run = train_federated(model, train, test=test, clients=8, rounds=15, protocol="fedavg", local_steps=3,
                              defense=d, progress=False)
        accs[d] = run
    assert accs[None].accuracy > 0.6                          # chance is 0.1
    assert accs["dp:clip=1,noise=8"].accuracy < accs[None].accuracy - 0.1
    assert accs["dp:clip=1,noise=8"].epsilon < 10


@pytest.mark.parametrize("protocol,local_steps,steps", [("fedsgd", 1, 6), ("fedsgd", 3, 6), ("fedavg", 3, 18)])
def test_dp_epsilon_counts_the_noisy_steps_each_client_takes(protocol, local_steps, steps):
    """FedSGD releases once per round whatever local_steps says; FedAvg noises every local step."""
    data = load_dataset("digits").subset(torch.arange(400))
    d = parse_defense("dp:clip=1,noise=1.5")
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=(8,), seed=0)
    run = train_federated(model, data, clients=4, rounds=6, protocol=protocol, local_steps=local_steps,
                          batch_size=10, defense=d, progress=False)
    want = d.epsilon(delta=1e-5, sample_rate=10 / 100, steps=steps, accountant="rdp")
    assert run.epsilon == pytest.approx(want, rel=1e-9)
    assert run.epsilon < d.epsilon(delta=1e-5, sample_rate=10 / 100, steps=steps + 1, accountant="rdp")


def test_cli_tradeoff(tmp_path, capsys):
    assert main(["tradeoff", "--dataset", "digits", "--defense", "nope", "--attack", "membership",
                 "--out", str(tmp_path)]) == 2
    assert "unknown defense" in capsys.readouterr().err
    assert main(["tradeoff", "--dataset", "diabetes", "--defense", "sign", "--attack", "reconstruction",
                 "--out", str(tmp_path)]) == 2
    assert "needs images" in capsys.readouterr().err
    assert main(["tradeoff", "--dataset", "digits", "--defense", "sign", "--attack", "both",
                 "--out", str(tmp_path)]) == 2
    assert main(["tradeoff", "--dataset", "diabetes", "--defense", "sign", "--attack", "membership",
                 "--gap", "spn", "--out", str(tmp_path)]) == 2
    assert "--gap 'spn' is not among the defenses swept" in capsys.readouterr().err


def test_cli_tradeoff_prints_the_gap_at_equal_privacy_loss(tmp_path, capsys):
    assert main(["tradeoff", "--dataset", "diabetes", "--defense", "spn:alpha=0.1/1;sign", "--attack", "tracing",
                 "--seeds", "2", "--levels", "0.5,1", "--gap", "spn", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gap"]["defense"] == "spn" and [r["privacy_loss"] for r in out["gap"]["rows"]] == [0.5, 1.0]
    full = out["gap"]["rows"][1]                                   # at loss <= 1 every curve has a value
    assert full["seeds"] == 2 and full["best_baseline"] == "sign" and full["gap"] is not None


def test_sweep_attacks_the_trained_model_under_a_model_side_defense(tmp_path, monkeypatch):
    """A model-side defense trains a wrapped copy: the attacks must face that trained copy,
    whose accuracy is the one recorded (not the untrained model the sweep started from)."""
    import leaklab.tradeoff as tr
    from leaklab.fl import accuracy

    seen = []
    original = tr._attack

    def spy(attack, model, data, defense, **kw):
        seen.append(model)
        return original(attack, model, data, defense, **kw)

    monkeypatch.setattr(tr, "_attack", spy)
    settings = {**SMALL, "rounds": 6}
    recs = sweep_tradeoff("digits", "vib:beta=0.01;spn:alpha=0.1", attacks=("membership",), out=tmp_path,
                          settings=settings, progress=False)
    data = load_dataset("digits")
    data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:settings["records"]])
    test, _ = data.split(0.3, seed=0)
    assert len(seen) == 2
    for model, rec in zip(seen, recs):
        assert type(model).__name__ in ("VIBModel", "SPNModel")
        assert accuracy(model.eval(), test) == pytest.approx(rec.numbers["accuracy"], abs=1e-9)


def test_federated_spn_clients_keep_their_own_secret():
    """Under SPN each client trains its own head and codes; the shared parameters move, the
    model returned carries client 0's secret, and it differs from what one shared head gives."""
    from leaklab.defenses import make_defense

    data = load_dataset("digits", n=300)
    d = make_defense("spn", alpha=0.5, bits=8)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=(16,), seed=0)
    secrets = d.client_secrets(d.wrap(model), 4, seed=11)
    assert not torch.equal(secrets["codes"][0], secrets["codes"][1])
    run = train_federated(model, data, clients=4, rounds=3, protocol="fedavg", local_steps=2, batch_size=8,
                          defense=d, progress=False)
    assert type(run.model).__name__ == "SPNModel" and "polar.weight" not in run.params
    torch.testing.assert_close(run.model.codes, secrets["codes"][0])
    assert not torch.allclose(run.model.polar.weight, secrets["polar.weight"][0])    # trained by client 0


def test_spn_sweeps_by_default_and_reconstruction_keeps_the_best_attack(tmp_path):
    assert [v for f, k, v, _ in expand_defenses("spn")] == [0.01, 0.1, 0.3, 1.0]
    rec = sweep_tradeoff("digits", "none", attacks=("reconstruction",), out=tmp_path,
                         settings={**SMALL, "attack_iters": 5}, progress=False)[0]
    n = rec.numbers
    assert n["attack_attack"] == "best of analytic, idlg"
    assert n["privacy_loss"] >= max(0.0, n["attack_ssim_analytic"], n["attack_ssim_idlg"]) - 1e-9
    assert n["privacy_loss"] > 0.99          # undefended, one record: the analytic attack is exact


def _rec(family, seed, attack, pl, acc):
    return Record(kind="tradeoff", config={"attack": attack, "family": family, "defense": {"name": family, "v": pl}},
                  seed=seed, numbers={"privacy_loss": pl, "accuracy": acc})


def test_gap_at_equal_loss_is_paired_per_seed_against_the_best_baseline():
    recs = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, -0.02)):
        recs += [_rec("spn", seed, "membership", 0.1, 0.80 + shift), _rec("spn", seed, "membership", 0.5, 0.90 + shift),
                 _rec("dp", seed, "membership", 0.1, 0.60), _rec("dp", seed, "membership", 0.5, 0.70),
                 _rec("sign", seed, "membership", 0.2, 0.75),
                 _rec("none", seed, "membership", 0.05, 0.99)]      # not a defense: never the baseline
    rows = {r["privacy_loss"]: r for r in gap_at_equal_loss(recs, "spn", levels=(0.1, 0.3))}
    # at 0.1 only dp is there: spn 0.80 vs dp 0.60; at 0.3 (step curves): spn 0.80 vs sign 0.75 (dp: 0.60)
    assert rows[0.1]["gap"] == pytest.approx(0.20) and rows[0.1]["best_baseline"] == "dp"
    assert rows[0.3]["gap"] == pytest.approx(0.05) and rows[0.3]["best_baseline"] == "sign"
    lo, hi = rows[0.3]["ci"]
    assert lo < 0.05 < hi and rows[0.3]["seeds"] == 3
    with pytest.raises(ValueError, match="no defense 'vib'"):
        gap_at_equal_loss(recs, "vib")
    below = gap_at_equal_loss(recs, "spn", levels=(0.05,))[0]      # spn's weakest point loses more
    assert below["gap"] is None and below["seeds"] == 0
