"""Datasets with their modality, task, sensitive attributes and the games they support.

>>> from leaklab.data import load_dataset, list_datasets
>>> [d.name for d in list_datasets(embedded=True)][:3]
['digits', 'diabetes', 'lfw']
"""
from .registry import (GAMES, MODALITIES, Dataset, DatasetInfo, as_dataset, dataset_info, list_datasets,
                       load_dataset, register_dataset)
from . import embedded as _embedded  # noqa: F401  (registers the embedded datasets)
from .embedded import SHAPES, make_shapes
from .download import DownloadError, RemoteFile, cache_dir, fetch
from . import download as _download  # noqa: F401  (registers the downloadable datasets)
from . import faces as _faces  # noqa: F401  (registers CelebA)
from .synthetic import WORDS, make_voices  # (registers the procedural sequence dataset)
from .photos import PHOTOGRAPHS, photographs

__all__ = [
    "GAMES", "MODALITIES", "PHOTOGRAPHS", "Dataset", "DatasetInfo", "DownloadError", "RemoteFile", "SHAPES",
    "WORDS", "cache_dir", "dataset_info", "fetch", "list_datasets", "load_dataset", "make_shapes",
    "make_voices", "photographs", "register_dataset",
]
