"""Downloaders: parsing and checksum checks on fixture files written in the real formats."""
import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from leaklab.data import RemoteFile, load_dataset
from leaklab.data.download import DownloadError, fetch, md5sum, read_idx


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _remote(path, name):
    return RemoteFile(name, f"file:///nonexistent/{name}", md5sum(path))


def test_mnist_parses_idx_fixture(cache):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.array([3, 1, 4, 1, 5])
    _write_idx(folder / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    files = [_remote(folder / "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
             _remote(folder / "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz")]
    ds = load_dataset("mnist", files=files)
    assert ds.x.shape == (5, 1, 28, 28)
    assert torch.allclose(ds.x[0, 0], torch.tensor(imgs[0] / 255.0, dtype=torch.float32))
    assert ds.y.tolist() == [3, 1, 4, 1, 5]


def test_idx_rejects_bad_magic(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(p)


def test_cifar10_parses_tarball_fixture(cache):
    folder = cache / "cifar10"
    folder.mkdir(parents=True)
    tar_path = folder / "cifar-10-python.tar.gz"
    rng = np.random.default_rng(1)
    with tarfile.open(tar_path, "w:gz") as tar:
        for i in range(1, 6):
            batch = {b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8),
                     b"labels": [i % 10, (i + 1) % 10]}
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{i}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    ds = load_dataset("cifar10", files=[_remote(tar_path, "cifar-10-python.tar.gz")])
    assert ds.x.shape == (10, 3, 32, 32)
    assert ds.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0


ADULT_ROWS = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K
38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, Black, Female, 0, 0, 40, United-States, >50K
53, Private, 234721, 11th, 7, Married-civ-spouse, Handlers-cleaners, Husband, Black, Male, 0, 0, 40, ?, <=50K
28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 0, 0, 40, Cuba, >50K
"""


def test_adult_parses_csv_fixture(cache):
    folder = cache / "adult"
    folder.mkdir(parents=True)
    p = folder / "adult.data"
    p.write_text(ADULT_ROWS + "\n")
    ds = load_dataset("adult", files=[_remote(p, "adult.data")])
    assert len(ds) == 4                      # the row with '?' is dropped
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert ds.attributes["sex"].tolist() == [1, 1, 0, 0]
    col = ds.info.attribute_features["sex"]
    assert ds.x[:, col].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ds.info.input_shape == (ds.x.shape[1],)


def test_checksum_mismatch_is_reported(cache):
    folder = cache / "adult"
    folder.mkdir(parents=True)
    (folder / "adult.data").write_text(ADULT_ROWS)
    bad = RemoteFile("adult.data", "file:///nonexistent/adult.data", "0" * 32)
    with pytest.raises(DownloadError, match="has MD5 .* expected 0000"):
        fetch("adult", [bad])


def test_failed_download_names_dataset_source_and_offline_alternatives(cache):
    rf = RemoteFile("adult.data", "file:///nonexistent/adult.data", "0" * 32)
    with pytest.raises(DownloadError) as err:
        fetch("adult", [rf], progress=False)
    msg = str(err.value)
    assert "dataset 'adult'" in msg and "file:///nonexistent/adult.data" in msg
    assert "work offline: digits, diabetes, lfw" in msg
    assert not list((cache / "adult").glob(".part-*"))   # no partial file left behind


def test_download_false_does_not_fetch(cache):
    with pytest.raises(DownloadError, match="download=False"):
        load_dataset("mnist", download=False)
