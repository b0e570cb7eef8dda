import numpy as np
import pytest
import torch

from leaklab.data import list_datasets, load_dataset
from leaklab.games import (AttributeGame, identity, list_adversaries, list_games, make_game, play,
                           plot_sweep, release_gradients, sweep)
from leaklab.games.protocol import default_model

FAST = dict(trials=160, progress=False, adversary_options=dict(shadow_trials=400, max_features=256))
CASES = [(info.name, g) for info in list_datasets(embedded=True) for g in list_games() if g in info.games]


def test_every_inference_game_is_declared_somewhere_on_three_modalities():
    assert {g for _, g in CASES} == {"attribute", "property", "distribution", "user"}
    modalities = {load_dataset(d, n=50).modality for d, _ in CASES}
    assert modalities == {"tabular", "image", "sequence"}


@pytest.mark.parametrize("dataset,game", CASES)
def test_shadow_adversary_beats_chance_at_batch_one(dataset, game):
    data = load_dataset(dataset, n=min(600, load_dataset(dataset).info.size), seed=0)
    res = play(game, data, adversary="shadow", batch_size=1, seed=1, **FAST)
    assert res.score().auroc >= 0.6, res


def test_informed_adversary_recovers_sex_on_diabetes_and_degrades_with_batch_size():
    one = play("attribute", "diabetes", adversary="informed", batch_size=1, trials=200, progress=False)
    big = play("attribute", "diabetes", adversary="informed", batch_size=32, trials=200, progress=False)
    assert one.score().auroc >= 0.95
    assert 0.5 < big.score().auroc < one.score().auroc


def test_more_observed_rounds_add_evidence():
    res = play("attribute", "diabetes", adversary="informed", batch_size=16, rounds=5, trials=400,
               progress=False, seed=3)
    assert res.round_scores.shape == (5, 400)
    assert res.score(5).auroc > res.score(1).auroc
    np.testing.assert_allclose(res.scores(2), res.round_scores[0] + res.round_scores[1])


def test_same_seed_gives_the_same_numbers_and_another_seed_other_ones():
    kw = dict(adversary="informed", batch_size=4, trials=50, progress=False)
    a = play("attribute", "diabetes", seed=5, **kw)
    b = play("attribute", "diabetes", seed=5, **kw)
    c = play("attribute", "diabetes", seed=6, **kw)
    np.testing.assert_array_equal(a.round_scores, b.round_scores)
    assert not np.array_equal(a.round_scores, c.round_scores)


def test_batched_and_loop_engines_release_the_same_gradients():
    data = load_dataset("diabetes")
    model = default_model(data, seed=0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    idx = torch.randint(len(data), (6, 4), generator=torch.Generator().manual_seed(0))
    a = release_gradients(model, data.x[idx], data.y[idx], params, engine="batched")
    b = release_gradients(model, data.x[idx], data.y[idx], params, engine="loop")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_a_defense_that_destroys_the_gradient_brings_auroc_to_chance():
    def erase(grads):
        return {k: torch.zeros_like(v) for k, v in grads.items()}

    res = play("attribute", "diabetes", adversary="shadow", defense=erase, adaptive=True, batch_size=1,
               seed=2, **FAST)
    assert abs(res.score().auroc - 0.5) < 0.15
    assert play("attribute", "diabetes", adversary="informed", defense=identity, trials=40,
                progress=False).score().auroc > 0.9


def test_games_draw_batches_from_the_secret_distribution():
    data = load_dataset("shapes", n=400)
    gen = torch.Generator().manual_seed(0)
    game = make_game("property", data, attribute="colour", value="blue")
    tr = game.draw_trials(data, 300, gen)
    idx = game.draw_batches(data, tr, 8, gen)
    blue = (data.attributes["colour"][idx] == 1).sum(1)
    assert torch.equal(blue > 4, tr.secret == 1)
    user = make_game("user", data)
    tr = user.draw_trials(data, 50, gen)
    idx = user.draw_batches(data, tr, 5, gen)
    assert torch.equal(data.users[idx], tr.secret[:, None].expand(-1, 5))
    att = make_game("attribute", data)
    assert isinstance(att, AttributeGame)
    tr = att.draw_trials(data, 50, gen)
    idx = att.draw_batches(data, tr, 3, gen)
    assert torch.equal(data.attributes["colour"][idx[:, 0]], tr.secret)


def test_user_game_scores_one_column_per_user():
    res = play("user", "shapes", adversary="shadow", batch_size=2, **FAST)
    assert res.round_scores.shape == (1, 160, len(res.secret_names))
    assert len(res.secret_names) == 8


def test_sweep_gives_one_record_per_setting_and_a_figure():
    recs = sweep("attribute", "diabetes", adversary="informed", batch_sizes=[1, 8], rounds=[1, 3],
                 trials=40, progress=False)
    assert [(r.config["batch_size"], r.config["rounds"]) for r in recs] == [(1, 1), (1, 3), (8, 1), (8, 3)]
    lo, hi = recs[0].numbers["auroc_ci"]
    assert lo <= recs[0].numbers["auroc"] <= hi
    import matplotlib
    matplotlib.use("Agg")
    fig = plot_sweep(recs)
    assert len(fig.axes[0].lines) >= 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(game="user", dataset="diabetes"), "does not declare the user game; its games: attribute"),
    (dict(game="attribute", dataset="digits"), "does not declare the attribute game"),
    (dict(game="attribute", dataset="diabetes", attribute="height"), "choose from: age, sex"),
    (dict(game="guess", dataset="diabetes"), "choose from: attribute, distribution, property, user"),
    (dict(game="property", dataset="diabetes", adversary="informed"), "informed adversary plays only"),
    (dict(game="property", dataset="diabetes", adversary="phi"), "phi adversary plays only"),
    (dict(game="attribute", dataset="shapes", adversary="combined"), "combined adversary needs the feature"),
    (dict(game="attribute", dataset="shapes", adversary="informed"), "use adversary 'shadow'"),
    (dict(game="attribute", dataset="diabetes", adversary="oracle"), "choose from: combined, informed, phi, shadow"),
    (dict(game="attribute", dataset="diabetes", batch_size=0), "batch_size must be >= 1"),
    (dict(game="attribute", dataset="diabetes", engine="gpu"), "choose from: batched, loop"),
    (dict(game="user", dataset="shapes", attribute="colour"), "takes no attribute"),
])
def test_bad_input_names_the_valid_choices(kwargs, message):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=message):
        play(kwargs.pop("game"), kwargs.pop("dataset"), trials=4, progress=False, **kwargs)


def test_a_defense_that_releases_nan_is_refused():
    def broken(grads):
        return {k: torch.full_like(v, float("nan")) for k, v in grads.items()}

    with pytest.raises(ValueError, match="NaN or inf"):
        play("attribute", "diabetes", adversary="informed", defense=broken, trials=4, progress=False)


def test_registries_list_the_adversaries():
    assert list_adversaries() == ["combined", "informed", "phi", "shadow"]


def test_secure_sum_over_clients_is_like_a_larger_batch():
    kw = dict(adversary="informed", trials=300, progress=False, seed=4)
    alone = play("attribute", "diabetes", batch_size=4, **kw).score().auroc
    summed = play("attribute", "diabetes", batch_size=4, clients=4, **kw)
    assert summed.config["clients"] == 4
    assert 0.5 < summed.score().auroc < alone


def test_attribute_game_on_an_adult_file_in_the_real_format(tmp_path):
    # Adult downloads on Colab; offline, a file in the same format exercises the same path.
    from leaklab.data import RemoteFile
    from leaklab.data.download import md5sum

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(240):
        sex = rng.choice(["Male", "Female"])
        rows.append(", ".join([
            str(rng.integers(18, 80)), rng.choice(["Private", "State-gov", "Self-emp-inc"]),
            str(rng.integers(20000, 400000)), rng.choice(["Bachelors", "HS-grad", "Masters"]),
            str(rng.integers(5, 16)), rng.choice(["Never-married", "Married-civ-spouse", "Divorced"]),
            rng.choice(["Adm-clerical", "Sales", "Prof-specialty"]),
            rng.choice(["Husband", "Wife", "Not-in-family"]), rng.choice(["White", "Black"]), sex,
            str(rng.integers(0, 5000)), "0", str(rng.integers(20, 60)), "United-States",
            rng.choice(["<=50K", ">50K"])]))
    path = tmp_path / "adult" / "adult.data"
    path.parent.mkdir()
    path.write_text("\n".join(rows) + "\n")
    adult = load_dataset("adult", root=tmp_path, download=False,
                         files=[RemoteFile("adult.data", "file:///nonexistent/adult.data", md5sum(path))])
    res = play("attribute", adult, attribute="sex", adversary="informed", trials=100, progress=False)
    assert res.dataset == "adult" and res.score().auroc >= 0.95


def test_game_options_are_checked():
    with pytest.raises(ValueError, match="proportions must differ"):
        make_game("distribution", load_dataset("diabetes", n=50), proportions=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"value must be one of \['sex=1', 'sex=2'\]"):
        make_game("property", load_dataset("diabetes", n=50), value=3)
    with pytest.raises(ValueError, match="choose from: female, male"):
        make_game("distribution", load_dataset("voices", n=50), value="other")
