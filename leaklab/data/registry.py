"""The dataset registry: what each dataset is, and how to load it."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .._checks import check_choice
from . import custom as _custom
from .info import GAMES, MODALITIES, DatasetInfo

__all__ = [
    "GAMES",
    "MODALITIES",
    "DatasetInfo",
    "Dataset",
    "register_dataset",
    "list_datasets",
    "dataset_info",
    "load_dataset",
]


@dataclass
class Dataset:
    """Records with labels, sensitive attributes and (optionally) user ids.

    ``x`` is a float32 tensor of shape ``(N, *info.input_shape)``: images in
    ``[0, 1]``, tabular features standardised. ``y`` holds integer class labels,
    ``attributes[name]`` integer codes into ``info.attributes[name]``, and
    ``users`` (when ``info.has_users``) the id of the user who produced each record.
    """

    info: DatasetInfo
    x: torch.Tensor
    y: torch.Tensor
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)
    users: torch.Tensor | None = None

    def __post_init__(self):
        n = self.x.shape[0]
        if tuple(self.x.shape[1:]) != tuple(self.info.input_shape):
            raise ValueError(
                f"dataset {self.info.name!r}: records have shape {tuple(self.x.shape[1:])}, "
                f"the info says {tuple(self.info.input_shape)}"
            )
        for key, t in [("y", self.y), *self.attributes.items()] + (
            [("users", self.users)] if self.users is not None else []
        ):
            if t.shape[0] != n:
                raise ValueError(f"dataset {self.info.name!r}: {key} has {t.shape[0]} entries, x has {n}")

    # -- convenience -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info.input_shape)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        attrs = ", ".join(self.attributes) or "none"
        return (
            f"Dataset({self.name!r}, {self.modality}, n={len(self)}, "
            f"shape={self.input_shape}, classes={self.num_classes}, attributes={attrs})"
        )

    def subset(self, index) -> "Dataset":
        """The records at ``index`` (a slice, an index tensor or a boolean mask)."""
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return Dataset(
            info=self.info,
            x=self.x[index],
            y=self.y[index],
            attributes={k: v[index] for k, v in self.attributes.items()},
            users=None if self.users is None else self.users[index],
        )

    def where(self, attribute: str, value: int | str) -> "Dataset":
        """The records whose sensitive ``attribute`` has ``value`` (a code or a value name)."""
        check_choice("attribute", attribute, self.attributes)
        names = self.info.attributes[attribute]
        if isinstance(value, str):
            check_choice(f"value of {attribute}", value, names)
            value = names.index(value)
        return self.subset(self.attributes[attribute] == value)

    def sample(self, n: int, *, generator: torch.Generator | None = None, replace: bool = False) -> "Dataset":
        """``n`` records drawn at random (without replacement unless ``replace``)."""
        if n > len(self) and not replace:
            raise ValueError(f"cannot draw {n} records without replacement from {len(self)}")
        if replace:
            idx = torch.randint(len(self), (n,), generator=generator)
        else:
            idx = torch.randperm(len(self), generator=generator)[:n]
        return self.subset(idx)

    def split(self, fraction: float, *, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """A random split into two parts, the first holding ``fraction`` of the records."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=gen)
        k = int(round(fraction * len(self)))
        return self.subset(perm[:k]), self.subset(perm[k:])

    def to(self, device) -> "Dataset":
        return Dataset(
            info=self.info,
            x=self.x.to(device),
            y=self.y.to(device),
            attributes={k: v.to(device) for k, v in self.attributes.items()},
            users=None if self.users is None else self.users.to(device),
        )

    def with_info(self, **changes) -> "Dataset":
        return Dataset(replace(self.info, **changes), self.x, self.y, self.attributes, self.users)

    # -- your own data -----------------------------------------------------
    #: A dataset from arrays or tensors (:func:`leaklab.data.custom.from_arrays`).
    from_arrays = classmethod(_custom.from_arrays)
    #: A tabular dataset from a pandas DataFrame (:func:`leaklab.data.custom.from_pandas`).
    from_pandas = classmethod(_custom.from_pandas)

    def register(self) -> "Dataset":
        """Make this dataset loadable by its name (``load_dataset(name)``, the ``leaklab`` command
        in the same process); registering a name again replaces the entry with a warning."""
        data = self

        def _loader(info, *, n=None, seed=0):
            if n is None:
                return data
            return data.sample(n, generator=torch.Generator().manual_seed(seed))

        register_dataset(self.info)(_loader)
        return self


Loader = Callable[..., Dataset]
_REGISTRY: dict[str, tuple[DatasetInfo, Loader]] = {}


def register_dataset(info: DatasetInfo) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader`` under ``info.name``.

    The loader is called as ``loader(info, **options)`` and returns a :class:`Dataset`.
    """
    check_choice("modality", info.modality, MODALITIES)
    for g in info.games:
        check_choice("game", g, GAMES)

    if not isinstance(info.name, str) or not info.name:
        raise TypeError(f"a dataset name must be a non-empty string, got {info.name!r}")

    def deco(loader: Loader) -> Loader:
        if info.name in _REGISTRY:   # a re-run notebook cell: the new entry wins
            warnings.warn(f"a dataset named {info.name!r} was already registered; replacing it",
                          stacklevel=3)
        _REGISTRY[info.name] = (info, loader)
        return loader

    return deco


def list_datasets(*, embedded: bool | None = None, game: str | None = None) -> list[DatasetInfo]:
    """The registered datasets, optionally only the embedded ones or those supporting ``game``."""
    if game is not None:
        check_choice("game", game, GAMES)
    out = []
    for info, _ in _REGISTRY.values():
        if embedded is not None and info.embedded != embedded:
            continue
        if game is not None and game not in info.games:
            continue
        out.append(info)
    return out


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` registered as ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    check_choice("dataset", name, _REGISTRY)
    return _REGISTRY[name][0]


def load_dataset(name: str, **options) -> Dataset:
    """Load the dataset registered as ``name``.

    Options depend on the dataset (see its loader); common ones are ``n`` (number of
    records), ``seed``, and, for downloaded datasets, ``root`` and ``download``.

    >>> ds = load_dataset("digits")
    >>> ds.input_shape, ds.num_classes
    ((1, 8, 8), 10)
    """
    info = dataset_info(name)
    return _REGISTRY[name][1](info, **options)


def as_dataset(dataset, name: str = "dataset") -> "Dataset":
    """A :class:`Dataset` from a registered name or a Dataset (anything else: a TypeError naming ``name``)."""
    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a dataset name or a Dataset, got {type(dataset).__name__}")
    return dataset
