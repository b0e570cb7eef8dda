"""What a dataset is, before it is loaded: its modality, task, attributes and the games it supports.

The lowest piece of :mod:`leaklab.data`: the registry, the loaders and the converters of
your own data (:mod:`leaklab.data.custom`) all describe a dataset with a :class:`DatasetInfo`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["GAMES", "MODALITIES", "DatasetInfo"]

#: The experiments a dataset can declare that it supports.
GAMES = ("reconstruction", "attribute", "property", "distribution", "user", "membership", "tracing")
MODALITIES = ("image", "tabular", "sequence")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: everything the registry knows before loading it."""

    name: str
    modality: str                      # one of MODALITIES
    task: str                          # what the class label means
    num_classes: int
    input_shape: tuple[int, ...]       # shape of one record, e.g. (1, 8, 8) or (10,)
    size: int                          # number of records the default loader returns
    embedded: bool                     # True when it works offline (shipped inside a package or generated)
    games: tuple[str, ...]             # subset of GAMES
    source: str                        # where the data comes from
    description: str = ""
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # secret -> value names
    attribute_features: dict[str, int] = field(default_factory=dict)     # secret -> feature column in x
    has_users: bool = False            # records carry a user id (for user inference)
    class_names: tuple[str, ...] = ()  # names of the classes 0..K-1, where known
    feature_names: tuple[str, ...] = ()                              # tabular: name of each column of x
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)  # coded feature -> value names

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["games"] = list(self.games)
        d["attributes"] = {k: list(v) for k, v in self.attributes.items()}
        d["class_names"] = list(self.class_names)
        d["feature_names"] = list(self.feature_names)
        d["categories"] = {k: list(v) for k, v in self.categories.items()}
        return d
