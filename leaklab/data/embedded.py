"""Datasets that work offline: shipped inside scikit-learn / scikit-image, or generated."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .registry import Dataset, DatasetInfo, register_dataset


def _take(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """Return ``n`` records of ``ds`` drawn with ``seed`` (all of them, shuffled, when ``n`` is None)."""
    if n is None:
        n = len(ds)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n > len(ds):
        raise ValueError(f"dataset {ds.name!r} has {len(ds)} records; n={n} asked for more")
    gen = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=gen)[:n])


@register_dataset(
    DatasetInfo(
        name="digits",
        modality="image",
        task="handwritten digit 0-9",
        num_classes=10,
        input_shape=(1, 8, 8),
        size=1797,
        embedded=True,
        games=("reconstruction", "membership", "tracing"),
        source="scikit-learn load_digits (UCI optical recognition of handwritten digits)",
        description="8x8 grey-level digits, pixel values scaled to [0, 1].",
    )
)
def _load_digits(info: DatasetInfo, *, n: int | None = None, seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    return _take(Dataset(info, x, y), n, seed)


_DIABETES_INFO = DatasetInfo(
    name="diabetes",
    modality="tabular",
    task="disease progression after one year above the median (0: no, 1: yes)",
    num_classes=2,
    input_shape=(10,),
    size=442,
    embedded=True,
    games=("attribute", "property", "distribution", "membership", "tracing"),
    source="scikit-learn load_diabetes (Efron et al., 2004)",
    description=(
        "442 patients, 10 standardised baseline features (age, sex, BMI, blood pressure, six "
        "serum measurements). Sensitive attributes: sex (coded 1 or 2 in the source, which does "
        "not say which is which) and age (below or above the median age)."
    ),
    attributes={"sex": ("sex=1", "sex=2"), "age": ("younger", "older")},
    attribute_features={"sex": 1, "age": 0},
)


def _diabetes_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The raw features ``(442, 10)`` and targets of scikit-learn's diabetes data.

    Read straight from the files scikit-learn ships (what ``load_diabetes(scaled=False)``
    reads), without importing scikit-learn, whose import costs more than a game.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folder = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
    if folder is not None and (folder / "diabetes_data_raw.csv.gz").is_file():
        return (np.loadtxt(folder / "diabetes_data_raw.csv.gz", dtype=np.float64),
                np.loadtxt(folder / "diabetes_target.csv.gz", dtype=np.float64))
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target, dtype=np.float64)


@register_dataset(_DIABETES_INFO)
def _load_diabetes(info: DatasetInfo, *, n: int | None = None, seed: int = 0) -> Dataset:
    raw, target = _diabetes_arrays()
    feats = (raw - raw.mean(0)) / raw.std(0)
    x = torch.tensor(feats, dtype=torch.float32)
    y = torch.tensor(target > np.median(target), dtype=torch.long)
    sex = torch.tensor(raw[:, 1] > 1.5, dtype=torch.long)          # 1 -> code 0, 2 -> code 1
    age = torch.tensor(raw[:, 0] > np.median(raw[:, 0]), dtype=torch.long)
    return _take(Dataset(info, x, y, {"sex": sex, "age": age}), n, seed)


@register_dataset(
    DatasetInfo(
        name="lfw",
        modality="image",
        task="face (1) or not a face (0)",
        num_classes=2,
        input_shape=(1, 25, 25),
        size=200,
        embedded=True,
        games=("reconstruction", "membership", "tracing"),
        source="scikit-image data.lfw_subset (Labeled Faces in the Wild, Huang et al., 2007)",
        description="100 grey-level 25x25 face crops and 100 non-face crops, values in [0, 1].",
    )
)
def _load_lfw(info: DatasetInfo, *, n: int | None = None, seed: int = 0) -> Dataset:
    from skimage import data as skdata

    imgs = skdata.lfw_subset()  # (200, 25, 25): the first 100 are faces
    x = torch.tensor(imgs, dtype=torch.float32).unsqueeze(1)
    y = torch.zeros(len(imgs), dtype=torch.long)
    y[:100] = 1
    return _take(Dataset(info, x, y), n, seed)


# --- a procedural image dataset with a controllable attribute and per-user styles -------------

SHAPES = ("disc", "square", "triangle", "cross")
COLOURS = {"red": (0.85, 0.15, 0.12), "blue": (0.12, 0.25, 0.85)}


def make_shapes(
    n: int = 2000,
    *,
    size: int = 16,
    num_users: int = 8,
    p_red: float = 0.5,
    seed: int = 0,
) -> Dataset:
    """Generate the ``shapes`` dataset: coloured shapes drawn by users with personal styles.

    Each record is an RGB image of side ``size`` showing one of four shapes (the class
    label: disc, square, triangle, cross) in one of two colours (the sensitive
    attribute ``colour``: red with probability ``p_red``, else blue). Each of
    ``num_users`` users has a style drawn once: a background tint, a preferred
    position and a preferred scale; ``users`` records who drew each image.
    Everything is drawn from ``seed``, so the data are the same on every machine.
    """
    if n < 1 or size < 8 or num_users < 1:
        raise ValueError(f"need n >= 1, size >= 8 and num_users >= 1; got n={n}, size={size}, num_users={num_users}")
    if not 0.0 <= p_red <= 1.0:
        raise ValueError(f"p_red must lie in [0, 1], got {p_red}")
    g = torch.Generator().manual_seed(seed)
    # user styles, drawn once per user
    tint = 0.15 + 0.35 * torch.rand(num_users, 3, generator=g)          # background colour
    offset = 0.25 * (torch.rand(num_users, 2, generator=g) * 2 - 1)     # preferred centre
    scale = 0.45 + 0.2 * torch.rand(num_users, generator=g)             # preferred size
    # records
    users = torch.randint(num_users, (n,), generator=g)
    y = torch.randint(len(SHAPES), (n,), generator=g)
    colour = (torch.rand(n, generator=g) >= p_red).long()               # 0 red, 1 blue
    centre = offset[users] + 0.08 * torch.randn(n, 2, generator=g)
    radius = scale[users] * (1 + 0.1 * torch.randn(n, generator=g))
    lin = torch.linspace(-1, 1, size)
    v, u = torch.meshgrid(lin, lin, indexing="ij")                      # (S, S) rows, cols
    du = u[None] - centre[:, 0, None, None]
    dv = v[None] - centre[:, 1, None, None]
    r = radius[:, None, None]
    # signed "inside-ness" of each shape (positive inside), per record
    disc = r - torch.sqrt(du**2 + dv**2)
    square = 0.85 * r - torch.maximum(du.abs(), dv.abs())
    tri = torch.minimum(0.8 * r - dv, (dv + 0.8 * r) * 0.6 - du.abs())
    arm = 0.3 * r
    cross = torch.maximum(
        torch.minimum(arm - du.abs(), r - dv.abs()), torch.minimum(arm - dv.abs(), r - du.abs())
    )
    inside = torch.stack([disc, square, tri, cross], 1)[torch.arange(n), y]
    mask = torch.sigmoid(inside * size * 1.5)[:, None]                  # (n, 1, S, S), soft edges
    rgb = torch.tensor([COLOURS["red"], COLOURS["blue"]])[colour]       # (n, 3)
    rgb = (rgb + 0.06 * torch.randn(n, 3, generator=g)).clamp(0, 1)
    fg = rgb[:, :, None, None]
    bg = tint[users][:, :, None, None]
    img = bg * (1 - mask) + fg * mask + 0.03 * torch.randn(n, 3, size, size, generator=g)
    info = _shapes_info(size, n)
    return Dataset(info, img.clamp(0, 1).float(), y, {"colour": colour}, users)


def _shapes_info(size: int, n: int) -> DatasetInfo:
    return DatasetInfo(
        name="shapes",
        modality="image",
        task="shape: " + ", ".join(SHAPES),
        num_classes=len(SHAPES),
        input_shape=(3, size, size),
        size=n,
        embedded=True,
        games=("reconstruction", "attribute", "property", "distribution", "user", "membership", "tracing"),
        source="leaklab procedural generator (leaklab.data.make_shapes)",
        description=(
            "Coloured shapes drawn by users with personal styles (background tint, position, "
            "scale). Sensitive attribute: colour (red or blue), whose frequency p_red is a "
            "parameter; user ids support user inference."
        ),
        attributes={"colour": ("red", "blue")},
        has_users=True,
    )


@register_dataset(_shapes_info(16, 2000))
def _load_shapes(info: DatasetInfo, *, n: int | None = None, seed: int = 0, **options) -> Dataset:
    return make_shapes(info.size if n is None else n, seed=seed, **options)
