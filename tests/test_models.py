import pytest
import torch

from leaklab.models import build_model, list_models


@pytest.mark.parametrize("name", ["lenet", "convnet", "resnet"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 25, 25)])
def test_image_models_build_for_any_input_size(name, shape):
    m = build_model(name, shape, 7, seed=0)
    assert m(torch.rand(3, *shape)).shape == (3, 7)


def test_mlp_takes_any_shape():
    m = build_model("mlp", (10,), 2, hidden=(16, 16))
    assert m(torch.rand(5, 10)).shape == (5, 2)
    m = build_model("mlp", (1, 8, 8), 10, hidden=())
    assert m(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_seed_makes_initialisation_repeatable_without_global_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("lenet", (3, 16, 16), 10, seed=1)
    after = torch.rand(1)
    b = build_model("lenet", (3, 16, 16), 10, seed=1)
    c = build_model("lenet", (3, 16, 16), 10, seed=2)
    assert torch.equal(before, after)          # the global RNG was not consumed
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_lenet_uses_sigmoid_by_default_and_activation_switches():
    assert any(isinstance(m, torch.nn.Sigmoid) for m in build_model("lenet", (1, 8, 8), 10).modules())
    relu = build_model("lenet", (1, 8, 8), 10, activation="relu")
    assert any(isinstance(m, torch.nn.ReLU) for m in relu.modules())


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model 'vgg'; choose from: .*lenet.*mlp"):
        build_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"needs an image input_shape \(C, H, W\), got \(10,\)"):
        build_model("lenet", (10,), 2)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_model("mlp", (10,), 1)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        build_model("lenet", (1, 8, 8), 10, activation="gelu")
    assert set(list_models()) >= {"lenet", "convnet", "mlp", "resnet"}
