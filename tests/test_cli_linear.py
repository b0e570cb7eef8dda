"""``leaklab linear``: its verdicts are borne out, its errors are one line."""
import json

import pytest

from leaklab.cli import main

CASES = [
    ["--layer", "fc", "--input-shape", "12", "--out-features", "3"],
    ["--layer", "fc", "--input-shape", "12", "--out-features", "3", "--batch-size", "4"],
    ["--layer", "fc", "--input-shape", "1,3,3", "--out-features", "2", "--batch-size", "2", "--no-bias"],
    ["--layer", "conv", "--input-shape", "1,6,6", "--out-features", "2", "--padding", "1"],
    ["--layer", "conv", "--input-shape", "1,6,6", "--out-features", "2", "--padding", "1", "--forward", "--batch-size", "3"],
    ["--layer", "conv", "--input-shape", "2,5,5", "--out-features", "3", "--kernel", "2", "--stride", "2", "--no-bias"],
    ["--layer", "conv", "--input-shape", "1,4,4", "--out-features", "16", "--kernel", "3", "--padding", "1"],
    ["--layer", "conv", "--input-shape", "1,7,7", "--out-features", "2", "--kernel", "2", "--stride", "3",
     "--batch-size", "2", "--forward"],
]


def _run_json(capsys, argv):
    assert main(["linear", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a))
def test_verdicts_are_borne_out(capsys, argv):
    for noise in ("0", "0.01"):
        r = _run_json(capsys, [*argv, "--noise", noise, "--seed", "3"])
        assert {"unknowns", "equations", "rank", "unique", "knowns", "mse", "twin"} <= set(r)
        assert r["unique"] == (r["rank"] == r["unknowns"])
        if r["unique"]:
            assert r["mse"] < 1e-6 and r["twin"] is None
        else:
            assert r["twin"]["input_distance"] > 1e-2
            assert r["twin"]["gradient_distance"] < 1e-5
        if noise == "0":
            assert r["error"] is None and r["error_bound"] is None
        else:
            assert r["error"] <= r["error_bound"]


def test_both_verdicts_occur(capsys):
    seen = {_run_json(capsys, argv)["unique"] for argv in CASES}
    assert seen == {True, False}


def test_softmax_errors_are_reported_and_never_called_unique_at_batch_k(capsys):
    base = ["--input-shape", "16", "--out-features", "10", "--batch-size", "10"]
    rnd = _run_json(capsys, base)
    soft = _run_json(capsys, [*base, "--errors", "softmax"])
    assert rnd["errors"] == "random" and soft["errors"] == "softmax"
    # random errors have full rank 10; softmax errors sum to zero: rank D <= 9, a twin exists
    assert rnd["unique"] and rnd["rank"] == rnd["unknowns"] == 160
    assert not soft["unique"] and soft["rank"] <= 9 * 16
    assert soft["twin"]["input_distance"] > 1e-2 and soft["twin"]["gradient_distance"] < 1e-5
    # below K records the softmax layer is still determined
    assert _run_json(capsys, ["--input-shape", "16", "--out-features", "10", "--batch-size", "9",
                              "--errors", "softmax"])["unique"]
    assert main(["linear", *base, "--errors", "softmax"]) == 0
    assert "output errors: softmax cross-entropy" in capsys.readouterr().out
    assert main(["linear", *base]) == 0
    assert "output errors: random" in capsys.readouterr().out


def test_help_explains_errors_and_out_features(capsys):
    with pytest.raises(SystemExit):
        main(["linear", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--errors {random,softmax}" in text and "sum to zero" in text
    assert "--out-features K" in text and "--out " not in text


def test_readable_summary(capsys):
    assert main(["linear", "--input-shape", "10", "--out-features", "2", "--batch-size", "3", "--noise", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "not unique" in out and "twin" in out and "bound" in out
    assert len(out.strip().splitlines()) <= 9


@pytest.mark.parametrize("argv, message", [
    (["--layer", "rnn", "--input-shape", "4", "--out-features", "2"], "choose from 'fc', 'conv'"),
    (["--layer", "conv", "--input-shape", "16", "--out-features", "2"], "must be C,H,W"),
    (["--input-shape", "4,4", "--out-features", "2"], "expected N or C,H,W"),
    (["--input-shape", "4", "--out-features", "0"], "expected a positive integer"),
    (["--input-shape", "4", "--out-features", "2", "--noise", "-1"], "expected a finite number >= 0"),
    (["--layer", "conv", "--input-shape", "1,3,3", "--out-features", "2", "--kernel", "5"], "does not fit"),
    (["--layer", "conv", "--input-shape", "1,4,4", "--out-features", "2", "--errors", "softmax"], "use it with --layer fc"),
    (["--input-shape", "4", "--out-features", "2", "--errors", "soft"], "choose from 'random', 'softmax'"),
    (["--input-shape", "4", "--out", "2"], "--out-features"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    assert main(["linear", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
