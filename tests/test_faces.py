"""CelebA: parsing fixtures written in the real formats (a zip of 178x218 JPEGs and the
attribute list), the Google Drive rate-limit hint, the CLI error and a game on the fixture."""
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import leaklab.data.faces as faces
from leaklab.cli import main
from leaklab.data import RemoteFile, dataset_info, list_datasets, load_dataset
from leaklab.data.download import DownloadError, md5sum
from leaklab.data.faces import read_celeba_attributes, read_celeba_images
from leaklab.games import play

N = 60
NAMES = ["5_o_Clock_Shadow", "Eyeglasses", "Male", "Smiling", "Wavy_Hair", "Young"]
ZIP, TXT = "img_align_celeba.zip", "list_attr_celeba.txt"


def _write_fixture(folder, n=N, seed=0):
    """Faces whose grey level shows the sex (light: male), red bands outside the central square.

    Smiling (the label) agrees with sex nine times in ten, so that the label, which a
    gradient reveals, leaks the sex.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = rng.choice([-1, 1], size=(n, len(NAMES)))
    agree = np.where(rng.random(n) < 0.9, 1, -1)
    values[:, NAMES.index("Smiling")] = agree * values[:, NAMES.index("Male")]
    filenames = [f"{i + 1:06d}.jpg" for i in range(n)]
    with zipfile.ZipFile(folder / ZIP, "w") as zf:
        zf.writestr("img_align_celeba/", b"")              # the folder entry, as in the real archive
        for name, row in zip(filenames, values):
            male = row[NAMES.index("Male")] > 0
            grey = (190 if male else 60) + rng.integers(-20, 21, size=(218, 178))
            img = np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)
            img[:20] = img[-20:] = (255, 0, 0)           # cut off by the central 178x178 crop
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
            zf.writestr(f"img_align_celeba/{name}", buf.getvalue())
    lines = [str(n), " ".join(NAMES) + " "]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(filenames, values)]
    (folder / TXT).write_text("\n".join(lines) + "\n")
    files = [RemoteFile(f, f"file:///nonexistent/{f}", md5sum(folder / f)) for f in (TXT, ZIP)]
    return files, filenames, (values > 0).astype(np.int64)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba_root")
    files, filenames, values = _write_fixture(root / "celeba")
    return root, files, filenames, values


def test_celeba_is_registered_for_the_games():
    info = dataset_info("celeba")
    assert not info.embedded and info.modality == "image" and info.num_classes == 2
    assert info.input_shape == (3, 32, 32)
    assert {"attribute", "property", "distribution", "reconstruction", "membership", "tracing"} == set(info.games)
    assert info.attributes["sex"] == ("female", "male")
    assert "celeba" in {i.name for i in list_datasets(game="attribute")}


def test_attribute_list_parses(fixture):
    root, _, filenames, values = fixture
    names_out, attr_names, parsed = read_celeba_attributes(root / "celeba" / TXT)
    assert names_out == filenames and attr_names == NAMES
    assert parsed.shape == (N, len(NAMES)) and (parsed == values).all()


def test_attribute_list_rejects_a_wrong_count(tmp_path):
    p = tmp_path / TXT
    p.write_text("3\nMale Smiling\n000001.jpg  1 -1\n")
    with pytest.raises(ValueError, match="header says 3 images, the file lists 1"):
        read_celeba_attributes(p)


def test_celeba_loads_fixture(fixture):
    root, files, _, values = fixture
    ds = load_dataset("celeba", root=root, download=False, files=files, n=None, size=16, progress=False)
    assert ds.x.shape == (N, 3, 16, 16) and ds.x.dtype == torch.float32
    assert ds.input_shape == (3, 16, 16) and ds.info.size == N
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert ds.y.tolist() == values[:, NAMES.index("Smiling")].tolist()
    assert ds.attributes["sex"].tolist() == values[:, NAMES.index("Male")].tolist()
    assert ds.attributes["young"].tolist() == values[:, NAMES.index("Young")].tolist()
    assert ds.attributes["eyeglasses"].tolist() == values[:, NAMES.index("Eyeglasses")].tolist()
    # grey faces, light for men: the red bands above and below the square crop are gone
    assert float((ds.x[:, 0] - ds.x[:, 1]).abs().max()) < 0.1
    grey = ds.x.mean((1, 2, 3))
    male = ds.attributes["sex"] == 1
    assert grey[male].min() > 0.6 and grey[~male].max() < 0.4


def test_celeba_subset_is_seeded_and_consistent(fixture):
    root, files, _, _ = fixture
    a = load_dataset("celeba", root=root, download=False, files=files, n=10, size=8, seed=3, progress=False)
    b = load_dataset("celeba", root=root, download=False, files=files, n=10, size=8, seed=3, progress=False)
    assert len(a) == 10 and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    light = a.x.mean((1, 2, 3)) > 0.5
    assert light.tolist() == (a.attributes["sex"] == 1).tolist()


def test_read_images_finds_members_and_reports_missing(fixture):
    root, _, filenames, _ = fixture
    x = read_celeba_images(root / "celeba" / ZIP, filenames[:2], size=4, crop=100, progress=False)
    assert x.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="no image '999999.jpg'"):
        read_celeba_images(root / "celeba" / ZIP, ["999999.jpg"], progress=False)


@pytest.mark.parametrize("option, value, error", [
    ("size", 0, ValueError), ("n", 0, ValueError), ("crop", 2.5, TypeError), ("seed", "1", TypeError),
])
def test_celeba_options_are_checked_before_fetching(cache, option, value, error):
    with pytest.raises(error, match=option):
        load_dataset("celeba", download=False, **{option: value})


def test_html_instead_of_the_archive_hints_at_drive_rate_limit(fixture, tmp_path):
    _, files, _, _ = fixture
    folder = tmp_path / "celeba"
    folder.mkdir()
    (folder / TXT).write_text((fixture[0] / "celeba" / TXT).read_text())
    (folder / ZIP).write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>")
    with pytest.raises(DownloadError) as err:
        load_dataset("celeba", root=tmp_path, files=files, progress=False)
    msg = str(err.value)
    assert "dataset 'celeba'" in msg and "Google Drive may be rate-limiting" in msg
    assert str(folder / ZIP) in msg and "work offline: digits" in msg
    assert not (folder / ZIP).exists()            # the web page is removed, the next call downloads again


def test_cli_game_without_the_files_fails_in_one_line(cache, monkeypatch, capsys):
    monkeypatch.setattr(faces, "CELEBA_FILES",
                        [RemoteFile(rf.filename, f"file:///nonexistent/{rf.filename}", rf.md5)
                         for rf in faces.CELEBA_FILES])
    code = main(["game", "attribute", "--dataset", "celeba", "--trials", "10"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("leaklab: error: dataset 'celeba': could not download file:///nonexistent/")
    assert "put by hand" in err and "work offline" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_attribute_game_runs_on_celeba_fixture(fixture):
    root, files, _, _ = fixture
    ds = load_dataset("celeba", root=root, download=False, files=files, n=None, size=8, progress=False)
    res = play("attribute", ds, attribute="sex", batch_size=1, trials=100, adversary="shadow",
               adversary_options=dict(shadow_trials=100), progress=False)
    assert res.dataset == "celeba" and res.attribute == "sex"
    assert res.score().auroc >= 0.6


def test_docstring_examples():
    import doctest

    result = doctest.testmod(faces, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
