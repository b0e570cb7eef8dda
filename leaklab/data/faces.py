"""CelebA: face photographs with 40 annotated binary attributes, downloaded from Google Drive.

The official CelebA files are shared from Google Drive. :func:`fetch_from_drive`
downloads them through :func:`~leaklab.data.download.fetch` (same cache, same MD5
check) and, when the check fails because Drive served a web page instead of the file
(a daily quota, a virus-scan notice), says so and explains where to put the files by
hand. The loader reads a random subset of the aligned faces straight from the zip
archive, without extracting it, crops each face to a square and shrinks it.

>>> from leaklab.data import dataset_info
>>> dataset_info("celeba").attributes["sex"]
('female', 'male')
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .._checks import check_positive_int
from .download import DownloadError, RemoteFile, _offline_hint, cache_dir, fetch
from .registry import Dataset, DatasetInfo, register_dataset

__all__ = ["CELEBA_FILES", "drive_url", "fetch_from_drive", "read_celeba_attributes",
           "read_celeba_images"]


def drive_url(file_id: str) -> str:
    """The direct-download address of the Google Drive file ``file_id``.

    ``confirm=t`` skips the page Drive shows before large files it cannot scan for
    viruses.

    >>> drive_url("abc")
    'https://drive.usercontent.google.com/download?id=abc&export=download&confirm=t'
    """
    if not isinstance(file_id, str) or not file_id:
        raise TypeError(f"file_id must be a non-empty string, got {file_id!r}")
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


#: The CelebA files the loader needs: the attribute table and the aligned, cropped faces
#: (Google Drive file ids and MD5 checksums of the official release, as used by torchvision).
CELEBA_FILES = [
    RemoteFile("list_attr_celeba.txt", drive_url("0B7EVK8r0v71pblRyaVFSWGxPY0U"),
               "75e246fa4810816ffd6ee81facbd244c"),
    RemoteFile("img_align_celeba.zip", drive_url("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
               "00d2c5bc6d35e252742224ab0c1e8fcb"),
]

_HTML_PREFIXES = (b"<!doctype html", b"<html")


def _is_html(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError:
        return False
    return head.startswith(_HTML_PREFIXES)


def fetch_from_drive(dataset: str, files: list[RemoteFile], *, root=None, download: bool = True,
                     progress: bool = True) -> dict[str, Path]:
    """Like :func:`~leaklab.data.download.fetch`, with advice for files shared from Google Drive.

    Returns the local path of each file. When a file fails its checksum because
    Google Drive returned an HTML page instead of it (Drive limits how often a
    shared file may be downloaded), the page is deleted and the
    :class:`~leaklab.data.download.DownloadError` says that Drive may be
    rate-limiting, where to put the files by hand (``cache_dir()/<dataset>/<filename>``)
    and which datasets work offline. Other download errors get the by-hand advice too.
    """
    folder = cache_dir(root) / dataset
    try:
        return fetch(dataset, files, root=root, download=download, progress=progress)
    except DownloadError as exc:
        by_hand = "; ".join(f"{rf.filename} at {folder / rf.filename}" for rf in files)
        html = [rf.filename for rf in files if _is_html(folder / rf.filename)]
        if html:
            for name in html:
                (folder / name).unlink()
            raise DownloadError(
                f"dataset {dataset!r}: Google Drive returned a web page instead of "
                f"{', '.join(html)} (deleted); Google Drive may be rate-limiting downloads of this "
                f"file, so try again later, or download the files by hand from the addresses "
                f"{', '.join(rf.url for rf in files)} and put {by_hand}; {_offline_hint()}"
            ) from exc
        msg, hint = str(exc), _offline_hint()
        if msg.endswith(hint):
            msg = msg[: -len(hint)].rstrip("; ")
        raise DownloadError(f"{msg}; the files can also be put by hand: {by_hand}; {hint}") from exc


def read_celeba_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    The file's first line holds the number of images, its second the attribute
    names, and each further line an image's file name followed by one value per
    attribute, -1 (absent) or 1 (present).

    Returns
    -------
    filenames : list of str
        The image file names, in the file's order.
    names : list of str
        The attribute names (e.g. ``"Male"``, ``"Smiling"``).
    values : numpy.ndarray
        ``(len(filenames), len(names))`` int64 array, 1 where the attribute is present, else 0.
    """
    with open(path, encoding="utf-8") as f:
        lines = [line.split() for line in f if line.strip()]
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise ValueError(f"{path} is not a CelebA attribute list (the first line must be the image count)")
    count, names, rows = int(lines[0][0]), lines[1], lines[2:]
    if len(rows) != count:
        raise ValueError(f"{path}: the header says {count} images, the file lists {len(rows)}")
    bad = next((r for r in rows if len(r) != len(names) + 1), None)
    if bad is not None:
        raise ValueError(f"{path}: expected a file name and {len(names)} values per line, "
                         f"got {len(bad)} fields in the line of {bad[0]}")
    raw = np.array([r[1:] for r in rows], dtype=np.int64).reshape(len(rows), len(names))
    if not np.isin(raw, (-1, 1)).all():
        raise ValueError(f"{path}: attribute values must be -1 or 1")
    return [r[0] for r in rows], list(names), (raw > 0).astype(np.int64)


def read_celeba_images(path: str | os.PathLike, filenames: list[str], *, size: int = 32,
                       crop: int = 178, progress: bool = True) -> np.ndarray:
    """Read and shrink the images ``filenames`` from the zip archive ``path``.

    Each JPEG is decoded, cut to the central ``crop`` x ``crop`` square (the whole
    width of a 178x218 aligned face by default; smaller values zoom in on the face),
    resized to ``size`` x ``size`` and scaled to ``[0, 1]``. Members are found by file
    name whatever folder of the archive holds them; nothing is extracted to disk.

    Returns
    -------
    numpy.ndarray
        ``(len(filenames), 3, size, size)`` float32 array.
    """
    from PIL import Image
    from .._progress import tqdm

    check_positive_int("size", size)
    check_positive_int("crop", crop)
    out = np.empty((len(filenames), 3, size, size), dtype=np.float32)
    with zipfile.ZipFile(path) as zf:
        members = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
        missing = [f for f in filenames if f not in members]
        if missing:
            raise ValueError(f"{path} holds no image {missing[0]!r} ({len(missing)} listed images missing)")
        for k, name in enumerate(tqdm(filenames, desc="celeba: decoding", unit="img",
                                      progress=progress)):
            with Image.open(io.BytesIO(zf.read(members[name]))) as img:
                img = img.convert("RGB")
                w, h = img.size
                side = min(crop, w, h)
                left, top = (w - side) // 2, (h - side) // 2
                # crop first, so that the filter never reaches pixels outside the square
                small = img.crop((left, top, left + side, top + side)).resize(
                    (size, size), Image.Resampling.BILINEAR)
            out[k] = np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out


# --- the registered dataset -------------------------------------------------------------------

#: leaklab's name of each sensitive attribute -> (CelebA column, names of values 0 and 1).
_CELEBA_ATTRIBUTES = {
    "sex": ("Male", ("female", "male")),
    "young": ("Young", ("older", "young")),
    "eyeglasses": ("Eyeglasses", ("no eyeglasses", "eyeglasses")),
}
_CELEBA_LABEL = "Smiling"


def _celeba_info(size: int, n: int) -> DatasetInfo:
    return DatasetInfo(
        name="celeba", modality="image", task="smiling (0: no, 1: yes)", num_classes=2,
        input_shape=(3, size, size), size=n, embedded=False,
        games=("reconstruction", "attribute", "property", "distribution", "membership", "tracing"),
        source="CelebA (Liu et al., 2015), aligned faces downloaded from Google Drive on first use",
        description="Colour photographs of celebrities' faces (a random subset of the 202,599 "
                    "aligned 178x218 images), cropped to a square and resized, values in [0, 1]. "
                    "Label: smiling. Sensitive attributes from the annotations: sex, young, "
                    "eyeglasses. Options: n (default 20000, None for all), size (default 32), "
                    "crop (default 178), seed.",
        attributes={k: v for k, (_, v) in _CELEBA_ATTRIBUTES.items()},
    )


@register_dataset(_celeba_info(32, 20000))
def _load_celeba(info, *, n=20000, size=32, crop=178, seed=0, root=None, download=True,
                 progress=True, files=None):
    if n is not None:
        check_positive_int("n", n)
    check_positive_int("size", size)
    check_positive_int("crop", crop)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    files = CELEBA_FILES if files is None else files
    paths = fetch_from_drive("celeba", files, root=root, download=download, progress=progress)
    attr_file = next(rf.filename for rf in files if rf.filename.endswith(".txt"))
    zip_file = next(rf.filename for rf in files if rf.filename.endswith(".zip"))
    filenames, names, values = read_celeba_attributes(paths[attr_file])
    needed = [_CELEBA_LABEL] + [col for col, _ in _CELEBA_ATTRIBUTES.values()]
    absent = [c for c in needed if c not in names]
    if absent:
        raise ValueError(f"{paths[attr_file]} has no attribute column {absent[0]!r}")
    index = np.arange(len(filenames))
    if n is not None and n < len(filenames):
        gen = torch.Generator().manual_seed(seed)
        index = np.sort(torch.randperm(len(filenames), generator=gen)[:n].numpy())
    x = read_celeba_images(paths[zip_file], [filenames[i] for i in index], size=size, crop=crop,
                           progress=progress)
    col = {name: j for j, name in enumerate(names)}
    attrs = {k: torch.from_numpy(values[index, col[c]].copy()) for k, (c, _) in _CELEBA_ATTRIBUTES.items()}
    y = torch.from_numpy(values[index, col[_CELEBA_LABEL]].copy())
    return Dataset(replace(info, input_shape=(3, size, size), size=len(index)), torch.from_numpy(x), y,
                   attrs)
