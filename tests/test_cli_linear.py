"""``leaklab linear``: its verdicts are borne out, its errors are one line."""
import json

import pytest

from leaklab.cli import main

CASES = [
    ["--layer", "fc", "--input-shape", "12", "--out", "3"],
    ["--layer", "fc", "--input-shape", "12", "--out", "3", "--batch-size", "4"],
    ["--layer", "fc", "--input-shape", "1,3,3", "--out", "2", "--batch-size", "2", "--no-bias"],
    ["--layer", "conv", "--input-shape", "1,6,6", "--out", "2", "--padding", "1"],
    ["--layer", "conv", "--input-shape", "1,6,6", "--out", "2", "--padding", "1", "--forward", "--batch-size", "3"],
    ["--layer", "conv", "--input-shape", "2,5,5", "--out", "3", "--kernel", "2", "--stride", "2", "--no-bias"],
    ["--layer", "conv", "--input-shape", "1,4,4", "--out", "16", "--kernel", "3", "--padding", "1"],
    ["--layer", "conv", "--input-shape", "1,7,7", "--out", "2", "--kernel", "2", "--stride", "3",
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


def test_readable_summary(capsys):
    assert main(["linear", "--input-shape", "10", "--out", "2", "--batch-size", "3", "--noise", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "not unique" in out and "twin" in out and "bound" in out
    assert len(out.strip().splitlines()) <= 8


@pytest.mark.parametrize("argv, message", [
    (["--layer", "rnn", "--input-shape", "4", "--out", "2"], "choose from 'fc', 'conv'"),
    (["--layer", "conv", "--input-shape", "16", "--out", "2"], "must be C,H,W"),
    (["--input-shape", "4,4", "--out", "2"], "expected N or C,H,W"),
    (["--input-shape", "4", "--out", "0"], "expected a positive integer"),
    (["--input-shape", "4", "--out", "2", "--noise", "-1"], "expected a finite number >= 0"),
    (["--layer", "conv", "--input-shape", "1,3,3", "--out", "2", "--kernel", "5"], "does not fit"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    assert main(["linear", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
