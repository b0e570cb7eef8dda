"""The ``leaklab reconstruct`` command: error lines and the JSON it prints."""
import json

import numpy as np
import pytest

from leaklab.attacks import list_attacks
from leaklab.cli import main


def _run(capsys, *argv):
    code = main(["reconstruct", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_attack_is_one_line_naming_the_choices(capsys):
    code, _, err = _run(capsys, "--attack", "nope", "--model", "lenet", "--dataset", "digits")
    assert code == 2
    assert err.count("\n") == 1 and "invalid choice: 'nope'" in err and "'dlg'" in err
    assert "Traceback" not in err


def test_missing_image_file_is_one_line(capsys, tmp_path):
    missing = tmp_path / "missing.png"
    code, _, err = _run(capsys, "--attack", "dlg", "--model", "lenet", "--image", str(missing))
    assert code == 2
    assert err.strip() == f"leaklab: error: image file not found: {missing}"


def test_unknown_dataset_and_too_large_batch(capsys, tmp_path):
    code, _, err = _run(capsys, "--attack", "dlg", "--model", "lenet", "--dataset", "nope")
    assert code == 2 and "unknown dataset 'nope'; choose from:" in err and "digits" in err
    import matplotlib.image as mpimg

    path = tmp_path / "a.png"
    mpimg.imsave(path, np.random.default_rng(0).random((8, 8, 3)))
    code, _, err = _run(capsys, "--attack", "dlg", "--model", "lenet", "--image", str(path), "--batch-size", "2")
    assert code == 2 and "--batch-size 2 is larger than the 1 --image files given" in err


def test_json_run_on_images_has_the_documented_fields(capsys, tmp_path):
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((8, 10)):      # the second image is resized, with a note on stderr
        paths += ["--image", str(tmp_path / f"img{i}.png")]
        mpimg.imsave(tmp_path / f"img{i}.png", rng.random((size, size, 3)))
    code, out, err = _run(capsys, "--attack", "idlg", "--model", "lenet", *paths, "--trials", "2",
                          "--iters", "5", "--json", "--out", str(tmp_path / "fig"), "--device", "cpu")
    assert code == 0, err
    assert "resizing" in err
    data = json.loads(out)
    assert {"trials", "seconds", "attack", "model", "config", "summary"} <= set(data)
    assert len(data["trials"]) == 2
    for t in data["trials"]:
        assert {"psnr", "mse", "ssim", "label_accuracy"} <= set(t)
    assert data["config"]["input_shape"] == [3, 8, 8]
    assert (tmp_path / "fig" / "reconstruct_idlg_lenet.png").exists()


@pytest.mark.parametrize("attack", ["analytic", "rgap"])
def test_linear_system_attacks_run_through_the_command(capsys, attack):
    from leaklab.models import list_models

    model = "mlp" if attack == "analytic" else "rgapnet"
    # a missing registration is a failure here, never a skip
    assert attack in list_attacks(), f"attack {attack!r} is not registered"
    assert model in list_models(), f"model {model!r} is not registered"
    code, out, err = _run(capsys, "--attack", attack, "--model", model, "--dataset", "digits", "--trials", "2",
                          "--json")
    assert code == 0, err
    trials = json.loads(out)["trials"]
    assert len(trials) == 2
    assert all(len(t["psnr_records"]) == 1 for t in trials)


def test_analytic_batch_reports_every_record(capsys):
    code, out, err = _run(capsys, "--attack", "analytic", "--model", "mlp", "--dataset", "digits",
                          "--batch-size", "4", "--trials", "4", "--json")
    assert code == 0, err
    trials = json.loads(out)["trials"]
    # strict JSON: an exact record's infinite PSNR is null, marked in psnr_records_infinite
    marks = [t.get("psnr_records_infinite", [0] * len(t["psnr_records"])) for t in trials]
    assert all(v is not None or m == 1 for t, ms in zip(trials, marks) for v, m in zip(t["psnr_records"], ms))
    per_record = np.array([[float("inf") if m else v for v, m in zip(t["psnr_records"], ms)]
                           for t, ms in zip(trials, marks)])
    assert per_record.shape == (4, 4)
    assert (per_record >= 30).sum(1).mean() >= 3
    for t, row in zip(trials, per_record):
        assert 0 <= t["recovered_exactly"] <= (row >= 30).sum()
    code, out, err = _run(capsys, "--attack", "analytic", "--model", "mlp", "--dataset", "digits",
                          "--batch-size", "4", "--trials", "2")
    assert code == 0, err
    assert "PSNR dB per record" in out and "records recovered exactly" in out
    row = out.splitlines()[2].split()
    assert len(row) == 6 + 4          # trial, PSNR, SSIM, MSE, labels, exact, then four records
