import torch
import pytest

from leaklab.data import GAMES, Dataset, dataset_info, list_datasets, load_dataset, make_shapes


EMBEDDED = ["digits", "diabetes", "lfw", "shapes"]


def test_registry_lists_embedded_and_downloadable():
    names = {i.name for i in list_datasets()}
    assert set(EMBEDDED) <= names
    assert {"mnist", "cifar10", "adult"} <= names
    assert {i.name for i in list_datasets(embedded=True)} >= set(EMBEDDED)
    assert all(not i.embedded for i in list_datasets(embedded=False))


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_datasets_load_offline_with_declared_shape(name):
    ds = load_dataset(name)
    info = dataset_info(name)
    assert len(ds) == info.size
    assert ds.x.dtype == torch.float32 and tuple(ds.x.shape[1:]) == info.input_shape
    assert torch.isfinite(ds.x).all()
    assert ds.y.dtype == torch.long and int(ds.y.max()) < info.num_classes
    assert set(ds.attributes) == set(info.attributes)
    for k, v in ds.attributes.items():
        assert int(v.max()) < len(info.attributes[k])
    assert set(info.games) <= set(GAMES)
    if info.modality == "image":
        assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0


def test_diabetes_sex_attribute_is_the_sex_feature():
    ds = load_dataset("diabetes")
    col = ds.info.attribute_features["sex"]
    # the standardised sex feature takes two values, one per attribute code
    v0 = ds.x[ds.attributes["sex"] == 0, col].unique()
    v1 = ds.x[ds.attributes["sex"] == 1, col].unique()
    assert len(v0) == 1 and len(v1) == 1 and float(v0) < float(v1)


def test_load_is_deterministic_and_subsamples():
    a = load_dataset("digits", n=100, seed=3)
    b = load_dataset("digits", n=100, seed=3)
    c = load_dataset("digits", n=100, seed=4)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert len(a) == 100


def test_unknown_dataset_names_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; choose from: .*digits.*shapes"):
        load_dataset("nope")


def test_too_many_records_is_a_clear_error():
    with pytest.raises(ValueError, match="lfw.*200 records"):
        load_dataset("lfw", n=500)


def test_shapes_attribute_frequency_is_controllable():
    red = make_shapes(2000, p_red=0.9, seed=1)
    blue = make_shapes(2000, p_red=0.1, seed=1)
    # colour code 0 is red
    assert float((red.attributes["colour"] == 0).float().mean()) == pytest.approx(0.9, abs=0.03)
    assert float((blue.attributes["colour"] == 0).float().mean()) == pytest.approx(0.1, abs=0.03)
    # red pixels dominate the red images' foreground: the mean red channel is higher
    assert red.x[:, 0].mean() > blue.x[:, 0].mean()


def test_shapes_users_have_distinct_styles():
    ds = make_shapes(3000, num_users=4, seed=0)
    means = torch.stack([ds.x[ds.users == u].mean((0, 2, 3)) for u in range(4)])
    # background tints differ between users by more than the noise in the means
    assert torch.cdist(means, means).add(torch.eye(4)).min() > 0.02


def test_shapes_rejects_bad_parameters():
    with pytest.raises(ValueError, match="p_red must lie in"):
        make_shapes(10, p_red=1.5)


def test_dataset_views():
    ds = load_dataset("diabetes")
    women = ds.where("sex", "sex=2")
    assert (women.attributes["sex"] == 1).all() and len(women) < len(ds)
    with pytest.raises(ValueError, match="unknown attribute 'colour'; choose from: age, sex"):
        ds.where("colour", 0)
    a, b = ds.split(0.25, seed=0)
    assert len(a) + len(b) == len(ds) and abs(len(a) - 0.25 * len(ds)) <= 1
    s = ds.sample(10, generator=torch.Generator().manual_seed(0))
    assert len(s) == 10
    with pytest.raises(ValueError, match="without replacement"):
        ds.sample(10_000)


def test_dataset_checks_consistency():
    info = dataset_info("digits")
    with pytest.raises(ValueError, match="records have shape"):
        Dataset(info, torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="y has 2 entries, x has 3"):
        Dataset(info, torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))
