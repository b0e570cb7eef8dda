"""Your own data: Dataset.from_arrays and Dataset.from_pandas, through a game and a reconstruction."""
import doctest
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import leaklab.data.custom as custom
from leaklab.attacks import run_reconstruction
from leaklab.data import Dataset, dataset_info, load_dataset
from leaklab.games import play


def clinic(n=400, seed=0, link=3.0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.integers(20, 80, n),
        "sex": rng.choice(["F", "M"], n),
        "bmi": rng.normal(25, 4, n),
        "smoker": rng.random(n) < 0.3,
        "site": pd.Categorical(rng.choice(["north", "south", "east"], n), categories=["north", "south", "east"]),
    })
    df["ill"] = np.where(df.bmi + link * (df.sex == "M") + rng.normal(0, 2, n) > 27, "yes", "no")
    return df


def test_doctests():
    assert doctest.testmod(custom).failed == 0


def test_from_pandas_codes_and_keeps_names():
    df = clinic()
    ds = Dataset.from_pandas(df, label="ill", sensitive=["sex"], users=None, name="clinic")
    assert ds.input_shape == (5,) and ds.num_classes == 2 and ds.modality == "tabular"
    assert ds.info.class_names == ("no", "yes")
    assert ds.info.attributes == {"sex": ("F", "M")} and ds.info.attribute_features == {"sex": 1}
    assert ds.info.categories["site"] == ("north", "south", "east")      # the categorical order kept
    assert ds.info.feature_names == ("age", "sex", "bmi", "smoker", "site")
    # codes agree with the frame
    assert torch.equal(ds.attributes["sex"], torch.tensor((df.sex == "M").to_numpy(), dtype=torch.long))
    assert torch.equal(ds.y, torch.tensor((df.ill == "yes").to_numpy(), dtype=torch.long))
    # standardised by default: mean 0, sd 1 per column
    assert torch.allclose(ds.x.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(ds.x.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    raw = Dataset.from_pandas(df, label="ill", sensitive="sex", standardize=False)
    assert torch.equal(raw.x[:, 0], torch.tensor(df.age.to_numpy(), dtype=torch.float32))
    assert set(ds.info.games) == {"attribute", "property", "distribution", "membership"}


def test_from_pandas_numeric_sensitive_in_numeric_order_and_users():
    df = clinic()
    df["decade"] = (df.age // 10) * 10
    df["patient"] = [f"p{i % 7}" for i in range(len(df))]
    ds = Dataset.from_pandas(df, label="ill", sensitive="decade", users="patient", keep_sensitive=False)
    names = ds.info.attributes["decade"]
    assert names == tuple(f"decade={d}" for d in sorted(df.decade.unique()))
    assert "decade" not in ds.info.feature_names and ds.info.attribute_features == {}
    assert ds.info.has_users and "user" in ds.info.games and int(ds.users.max()) == 6


def test_informed_adversary_plays_on_a_dataframe_and_a_null_stays_at_chance():
    ds = Dataset.from_pandas(clinic(), label="ill", sensitive="sex", name="clinic")
    hit = play("attribute", ds, adversary="informed", trials=64, progress=False).score()
    assert hit.auroc > 0.9
    # a sensitive value drawn independently of everything, not among the features: nothing to infer
    df = clinic(seed=1)
    df["coin"] = np.random.default_rng(5).choice(["heads", "tails"], len(df))
    null = Dataset.from_pandas(df, label="ill", sensitive="coin", keep_sensitive=False)
    res = play("attribute", null, adversary="shadow", trials=128, progress=False,
               adversary_options={"shadow_trials": 128}).score()
    lo, hi = res.auroc_ci
    assert lo <= 0.5 <= hi


def test_from_arrays_images_through_a_reconstruction():
    d = load_dataset("digits", n=64)
    ds = Dataset.from_arrays(d.x.numpy(), d.y.numpy(), name="mydigits")
    assert ds.modality == "image" and ds.input_shape == (1, 8, 8) and "reconstruction" in ds.info.games
    run = run_reconstruction(attack="rgap", model="rgapnet", dataset=ds, trials=2, progress=False)
    assert run.scores.psnr.shape == (2, 1) and run.config["data"] == "mydigits"
    # (N, H, W) grey images get a channel
    assert Dataset.from_arrays(d.x[:, 0], d.y).input_shape == (1, 8, 8)


def test_from_arrays_sensitive_column_and_value_names():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    x[:, 2] = rng.integers(0, 3, 100)
    ds = Dataset.from_arrays(x, rng.integers(0, 2, 100), sensitive={"g": 2, "flag": rng.random(100) < 0.5})
    assert ds.info.attributes["g"] == ("g=0", "g=1", "g=2") and ds.info.attribute_features == {"g": 2}
    assert ds.info.attributes["flag"] == ("False", "True")
    labels = np.array(["cat", "dog", "cat", "emu"] * 25)
    ds2 = Dataset.from_arrays(x, labels)
    assert ds2.num_classes == 3 and ds2.info.class_names == ("cat", "dog", "emu")
    assert Dataset.from_arrays(x, np.zeros(100, dtype=int), num_classes=4).num_classes == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(y=np.array([1, 2] * 50)), r"y must hold codes 0\.\.K-1"),
    (dict(y=np.array([0, 2] * 50)), r"y must hold codes 0\.\.K-1 with every code present, got values \{0, 2\}"),
    (dict(y=np.zeros(100, dtype=int)), "y has a single class"),
    (dict(y=np.zeros(99, dtype=int)), r"y must hold one label per record \(100\)"),
    (dict(sensitive={"s": np.zeros(100, dtype=int)}), "sensitive attribute 's' has a single value"),
    (dict(sensitive={"s": np.array(["a"] * 100)}), "sensitive attribute 's' has a single value \\('a'\\)"),
    (dict(sensitive={"s": np.arange(100) % 3 + 1}), r"sensitive attribute 's' must hold codes 0\.\.K-1"),
    (dict(sensitive={"s": np.arange(100)}), "sensitive attribute 's' has 100 distinct values"),
    (dict(sensitive={"s": 7}), "sensitive\\['s'\\] = 7 is not a column of x"),
    (dict(users=np.zeros(100)), "users holds a single user id"),
    (dict(name=""), "name must be a non-empty string"),
])
def test_from_arrays_refuses_bad_inputs(kwargs, message):
    rng = np.random.default_rng(0)
    args = dict(x=rng.normal(size=(100, 3)), y=rng.integers(0, 2, 100))
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises((ValueError, TypeError), match=message):
        Dataset.from_arrays(x, y, **args)


def test_register_makes_it_loadable_by_name_and_rerun_replaces():
    ds = Dataset.from_pandas(clinic(), label="ill", sensitive="sex", name="clinic-test")
    ds.register()
    assert dataset_info("clinic-test").attributes == {"sex": ("F", "M")}
    assert len(load_dataset("clinic-test", n=10)) == 10
    with pytest.warns(UserWarning, match="already registered; replacing it"):
        ds.with_info(description="second").register()
    assert dataset_info("clinic-test").description == "second"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        play("attribute", "clinic-test", adversary="informed", trials=8, progress=False)
