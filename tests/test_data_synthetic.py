import pytest
import torch

from leaklab.data import dataset_info, load_dataset, make_voices


def test_voices_is_a_registered_sequence_dataset_with_its_games():
    info = dataset_info("voices")
    assert info.modality == "sequence" and info.embedded and info.has_users
    assert set(info.games) == {"attribute", "property", "distribution", "user", "membership", "tracing"}
    ds = load_dataset("voices", n=300, seed=1)
    assert ds.x.shape == (300, *info.input_shape) and ds.x.dtype == torch.float32
    assert torch.isfinite(ds.x).all()
    assert set(ds.attributes) == {"sex"} and ds.users.max() < 10


def test_same_seed_same_data_and_sex_is_a_property_of_the_speaker():
    a, b = make_voices(200, seed=3), make_voices(200, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.users, b.users)
    assert not torch.equal(a.x, make_voices(200, seed=4).x)
    assert torch.equal(a.attributes["sex"], a.users % 2)


def test_pitch_band_separates_the_sexes_and_words_differ():
    ds = make_voices(1000, seed=0)
    low_bands = ds.x[..., :4].mean((1, 2))
    female = ds.attributes["sex"] == 0
    # a higher pitch and formants move energy out of the lowest bands
    assert low_bands[female].mean() < low_bands[~female].mean()
    means = torch.stack([ds.x[ds.y == w].mean(0) for w in range(4)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).triu(1)[0, 1:].min() > 0.5


@pytest.mark.parametrize("kwargs,message", [
    (dict(n=0), "n must be an int >= 1"),
    (dict(frames=2), "frames must be an int >= 4"),
    (dict(num_words=7), r"num_words must be an int in \[2, 4\]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_voices(**kwargs)
