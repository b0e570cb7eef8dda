"""Paper-scale datasets: downloaded once into a cache, verified by checksum, then parsed.

Nothing here runs on import. :func:`fetch` looks for each file in the cache
(``$LEAKLAB_CACHE``, else ``~/.cache/leaklab``), downloads what is missing, and
checks every file's MD5 before a parser reads it. A failed download raises
:class:`DownloadError` naming the dataset, the address and the embedded datasets
that work offline.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .registry import Dataset, DatasetInfo, list_datasets, register_dataset

__all__ = ["RemoteFile", "DownloadError", "cache_dir", "fetch", "md5sum", "read_idx",
           "read_cifar10", "read_adult"]


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded or failed its checksum."""


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    md5: str


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory datasets are cached in: ``root``, else ``$LEAKLAB_CACHE``, else ``~/.cache/leaklab``."""
    if root is None:
        root = os.environ.get("LEAKLAB_CACHE") or Path.home() / ".cache" / "leaklab"
    return Path(root)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _offline_hint() -> str:
    names = ", ".join(i.name for i in list_datasets(embedded=True))
    return f"datasets that work offline: {names}"


def fetch(dataset: str, files: list[RemoteFile], *, root=None, download: bool = True,
          progress: bool = True) -> dict[str, Path]:
    """Return local paths of ``files`` for ``dataset``, downloading and verifying as needed."""
    folder = cache_dir(root) / dataset
    out = {}
    for rf in files:
        path = folder / rf.filename
        if not path.exists():
            if not download:
                raise DownloadError(
                    f"dataset {dataset!r}: {rf.filename} is not in {folder} and download=False; "
                    f"it comes from {rf.url}; {_offline_hint()}"
                )
            folder.mkdir(parents=True, exist_ok=True)
            _download(dataset, rf, path, progress=progress)
        digest = md5sum(path)
        if digest != rf.md5:
            raise DownloadError(
                f"dataset {dataset!r}: {path} has MD5 {digest}, expected {rf.md5} "
                f"(a broken or partial download?); delete it to download it again from {rf.url}"
            )
        out[rf.filename] = path
    return out


def _download(dataset: str, rf: RemoteFile, path: Path, *, progress: bool) -> None:
    tmp = Path(tempfile.mkstemp(dir=path.parent, prefix=".part-")[1])
    try:
        with urllib.request.urlopen(rf.url, timeout=60) as resp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from .._progress import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"{dataset}/{rf.filename}")
            while block := resp.read(1 << 20):
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
        shutil.move(tmp, path)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"dataset {dataset!r}: could not download {rf.url} ({reason}); {_offline_hint()}"
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


# --- parsers -----------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} values")
    return data.reshape(dims)


def read_cifar10(path: str | os.PathLike, *, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 from its python tarball: images ``(N, 3, 32, 32)`` uint8 and labels."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for name in names:
            if name not in members:
                raise ValueError(f"{path} has no member {name}")
            batch = pickle.load(tar.extractfile(members[name]), encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
)
_ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
_ADULT_CATEGORICAL = ("workclass", "education", "marital-status", "occupation", "relationship",
                      "native-country")


def read_adult(path: str | os.PathLike):
    """Parse ``adult.data``: features, labels (income > 50K) and the sensitive attributes.

    Numeric columns are standardised; categorical ones one-hot encoded; ``sex`` is one
    column (1 for Male) and ``race`` one (1 for White), so that an attribute game can
    set them. Rows with missing values ('?') are dropped. Returns ``(x, y, attrs,
    feature_names)``.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) != len(ADULT_COLUMNS) or "?" in parts:
                continue
            rows.append(dict(zip(ADULT_COLUMNS, parts)))
    if not rows:
        raise ValueError(f"{path} holds no Adult records")
    cols = []
    names = []
    for c in _ADULT_NUMERIC:
        v = np.array([float(r[c]) for r in rows])
        cols.append((v - v.mean()) / (v.std() or 1.0))
        names.append(c)
    sex = np.array([r["sex"] == "Male" for r in rows], dtype=np.int64)
    race = np.array([r["race"] == "White" for r in rows], dtype=np.int64)
    cols += [sex.astype(float), race.astype(float)]
    names += ["sex=Male", "race=White"]
    for c in _ADULT_CATEGORICAL:
        values = sorted({r[c] for r in rows})
        for val in values:
            cols.append(np.array([r[c] == val for r in rows], dtype=float))
            names.append(f"{c}={val}")
    x = np.stack(cols, 1).astype(np.float32)
    y = np.array([r["income"].rstrip(".") == ">50K" for r in rows], dtype=np.int64)
    age = np.array([float(r["age"]) for r in rows])
    attrs = {"sex": sex, "race": race, "age": (age > np.median(age)).astype(np.int64)}
    return x, y, attrs, names


# --- registered downloadable datasets --------------------------------------------------------

MNIST_FILES = [
    RemoteFile("train-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
]
CIFAR10_FILES = [
    RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
]
ADULT_FILES = [
    RemoteFile("adult.data", "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data", "5d7c39d7b8804f071cdd1f2a7c460872"),
]


def _subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    gen = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=gen)[:n])


@register_dataset(DatasetInfo(
    name="mnist", modality="image", task="handwritten digit 0-9", num_classes=10,
    input_shape=(1, 28, 28), size=60000, embedded=False, games=("reconstruction", "membership", "tracing"),
    source="MNIST (LeCun et al., 1998), downloaded on first use",
    description="28x28 grey-level handwritten digits (training split), values in [0, 1].",
))
def _load_mnist(info, *, n=None, seed=0, root=None, download=True, files=MNIST_FILES):
    paths = fetch("mnist", files, root=root, download=download)
    x = read_idx(paths[files[0].filename]).astype(np.float32) / 255.0
    y = read_idx(paths[files[1].filename]).astype(np.int64)
    ds = Dataset(info, torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))
    return _subsample(ds, n, seed)


@register_dataset(DatasetInfo(
    name="cifar10", modality="image",
    task="object class (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)",
    num_classes=10, input_shape=(3, 32, 32), size=50000, embedded=False,
    games=("reconstruction", "membership", "tracing"),
    source="CIFAR-10 (Krizhevsky, 2009), downloaded on first use",
    description="32x32 colour photographs (training split), values in [0, 1].",
))
def _load_cifar10(info, *, n=None, seed=0, root=None, download=True, files=CIFAR10_FILES):
    paths = fetch("cifar10", files, root=root, download=download)
    x, y = read_cifar10(paths[files[0].filename], train=True)
    ds = Dataset(info, torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y))
    return _subsample(ds, n, seed)


def _adult_info(num_features: int) -> DatasetInfo:
    return DatasetInfo(
        name="adult", modality="tabular", task="income above 50K (0: no, 1: yes)", num_classes=2,
        input_shape=(num_features,), size=30162, embedded=False,
        games=("attribute", "property", "distribution", "membership", "tracing"),
        source="UCI Adult / Census Income (Kohavi, 1996), downloaded on first use",
        description="Census records with numeric and one-hot features. Sensitive attributes: "
                    "sex, race (White or not) and age (below or above the median).",
        attributes={"sex": ("Female", "Male"), "race": ("non-White", "White"),
                    "age": ("younger", "older")},
        attribute_features={"sex": 6, "race": 7, "age": 0},
    )


@register_dataset(_adult_info(104))
def _load_adult(info, *, n=None, seed=0, root=None, download=True, files=ADULT_FILES):
    paths = fetch("adult", files, root=root, download=download)
    x, y, attrs, _ = read_adult(paths[files[0].filename])
    ds = Dataset(
        replace(_adult_info(x.shape[1]), size=len(x)), torch.from_numpy(x), torch.from_numpy(y),
        {k: torch.from_numpy(v) for k, v in attrs.items()},
    )
    return _subsample(ds, n, seed)
