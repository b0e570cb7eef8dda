"""The architectures the chapters use, each built from an input shape and a class count.

>>> model = build_model("lenet", input_shape=(3, 32, 32), num_classes=10, seed=0)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])

Every model is a plain ``nn.Module`` without batch-dependent layers (no BatchNorm),
so per-sample and per-trial gradients from ``torch.func`` are exact.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._checks import Registry, check_choice, check_positive_int

__all__ = ["register_model", "list_models", "build_model", "LeNet", "ConvNet", "MLP", "ResNet",
           "ACTIVATIONS", "num_parameters"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}

_MODELS: Registry = Registry("a model", "model")


def register_model(name: str):
    """Decorator: make a model class or factory available to :func:`build_model` as ``name``."""
    return _MODELS.decorator(name)


def list_models() -> list[str]:
    return _MODELS.names()


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _check_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    return shape


def _image_shape(name: str, input_shape) -> tuple[int, int, int]:
    shape = _check_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"model {name!r} needs an image input_shape (C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


@register_model("lenet")
class LeNet(nn.Module):
    """The LeNet variant of DLG (Zhu et al., 2019): three 5x5 convolutions with sigmoids.

    Strides 2, 2, 1 and padding 2, 12 channels, then one linear layer. Works for any
    input size. ``activation`` switches the sigmoid for another non-linearity.
    """

    def __init__(self, input_shape, num_classes: int, *, channels: int = 12,
                 activation: str = "sigmoid"):
        super().__init__()
        c, h, w = _image_shape("lenet", input_shape)
        check_choice("activation", activation, ACTIVATIONS)
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 5, padding=2, stride=2), act(),
            nn.Conv2d(channels, channels, 5, padding=2, stride=2), act(),
            nn.Conv2d(channels, channels, 5, padding=2, stride=1), act(),
        )
        for s in (2, 2, 1):
            h, w = _conv_out(h, 5, s, 2), _conv_out(w, 5, s, 2)
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model("convnet")
class ConvNet(nn.Module):
    """A plain ConvNet: ``depth`` 3x3 convolutions (every other one with stride 2), ReLU, a linear head."""

    def __init__(self, input_shape, num_classes: int, *, width: int = 32, depth: int = 3,
                 activation: str = "relu"):
        super().__init__()
        c, h, w = _image_shape("convnet", input_shape)
        check_positive_int("depth", depth)
        check_choice("activation", activation, ACTIVATIONS)
        layers = []
        for i in range(depth):
            stride = 2 if (i % 2 == 1 and min(h, w) >= 4) else 1
            layers += [nn.Conv2d(c, width, 3, padding=1, stride=stride), ACTIVATIONS[activation]()]
            c = width
            h, w = _conv_out(h, 3, stride, 1), _conv_out(w, 3, stride, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model("mlp")
class MLP(nn.Module):
    """A multi-layer perceptron on flattened inputs; ``hidden=()`` gives logistic regression."""

    def __init__(self, input_shape, num_classes: int, *, hidden: Sequence[int] = (64,),
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        shape = _check_shape(input_shape)
        check_choice("activation", activation, ACTIVATIONS)
        sizes = [math.prod(shape), *hidden, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.skip(x))


@register_model("resnet")
class ResNet(nn.Module):
    """A small ResNet: a stem, three stages of basic blocks (GroupNorm), global pooling."""

    def __init__(self, input_shape, num_classes: int, *, width: int = 16, blocks: int = 1):
        super().__init__()
        c, _, _ = _image_shape("resnet", input_shape)
        check_positive_int("blocks", blocks)
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False),
                                  nn.GroupNorm(min(8, width), width), nn.ReLU())
        stages, cin = [], width
        for i, mult in enumerate((1, 2, 4)):
            cout = width * mult
            for j in range(blocks):
                stages.append(_Block(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.stages(self.stem(x)).mean((2, 3)))


def build_model(name: str, input_shape, num_classes: int, *, seed: int | None = None,
                device=None, **options) -> nn.Module:
    """Build the model registered as ``name`` for ``input_shape`` and ``num_classes``.

    ``seed`` makes the initial weights repeatable without touching the global RNG;
    ``options`` go to the model (``activation``, ``width``, ``hidden``, ...).
    """
    check_choice("model", name, _MODELS)
    check_positive_int("num_classes", num_classes, minimum=2)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _MODELS[name](input_shape, num_classes, **options)
    else:
        model = _MODELS[name](input_shape, num_classes, **options)
    if device is not None:
        from .runtime import get_device
        model = model.to(get_device(device))
    return model


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
