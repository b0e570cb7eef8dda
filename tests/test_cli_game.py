import json

import pytest

from leaklab.cli import main
from leaklab.results import read_records


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_game_json_has_one_result_per_setting(capsys):
    code, out, err = run(["game", "attribute", "--dataset", "diabetes", "--adversary", "informed",
                          "--batch-size", "1,8", "--rounds", "1,2", "--trials", "60", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["game"], doc["dataset"], doc["modality"]) == ("attribute", "diabetes", "tabular")
    assert [(r["batch_size"], r["rounds"]) for r in doc["results"]] == [(1, 1), (1, 2), (8, 1), (8, 2)]
    for r in doc["results"]:
        lo, hi = r["auroc_ci"]
        assert 0 <= lo <= r["auroc"] <= hi <= 1 and 0 <= r["accuracy"] <= 1
    assert doc["results"][0]["auroc"] > 0.9


def test_attribute_json_and_table_carry_the_phi_baseline_beside_the_adversary(capsys):
    code, out, err = run(["game", "attribute", "--dataset", "diabetes", "--batch-size", "1,16",
                          "--adversary", "informed", "--trials", "200", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert "phi" in doc["baseline"]
    for r in doc["results"]:
        lo, hi = r["baseline_auroc_ci"]
        assert 0.6 < lo <= r["baseline_auroc"] <= hi < 1          # phi alone predicts sex
        assert r["gain_over_phi"] == r["auroc"] - r["baseline_auroc"]
    assert doc["results"][0]["gain_over_phi"] > 0.1                # batch 1: the gradient adds much
    code, out, err = run(["game", "attribute", "--dataset", "diabetes", "--batch-size", "4",
                          "--adversary", "combined", "--trials", "60"], capsys)
    assert code == 0, err
    assert "phi AUROC" in out and "gain" in out
    code, out, err = run(["game", "property", "--dataset", "diabetes", "--trials", "40", "--json"], capsys)
    assert code == 0, err
    assert "baseline" not in json.loads(out) and "baseline_auroc" not in json.loads(out)["results"][0]


def test_game_table_and_out_folder(tmp_path, capsys):
    code, out, err = run(["game", "property", "--dataset", "shapes", "--trials", "40", "--seed", "3",
                          "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "property game (colour) on shapes [image]" in out and "AUROC" in out
    assert (tmp_path / "game_property_shapes.png").stat().st_size > 0
    recs = read_records(tmp_path / "game_property_shapes.jsonl")
    assert len(recs) == 1 and recs[0].kind == "game/property" and recs[0].seed == 3


@pytest.mark.parametrize("argv,message", [
    (["game", "user", "--dataset", "diabetes"], "does not declare the user game; its games: attribute, property"),
    (["game", "attribute", "--dataset", "diabetes", "--attribute", "height"], "choose from: age, sex"),
    (["game", "attribute", "--dataset", "nope"], "unknown dataset 'nope'; choose from:"),
    (["game", "property", "--dataset", "diabetes", "--adversary", "informed"], "informed adversary plays only"),
    (["game", "attribute", "--dataset", "voices", "--adversary", "informed"], "use adversary 'shadow'"),
    (["game", "guess", "--dataset", "diabetes"], "invalid choice: 'guess'"),
    (["game", "attribute", "--dataset", "diabetes", "--batch-size", "0"], "comma-separated positive integers"),
    (["game", "attribute", "--dataset", "diabetes", "--device", "tpu"], "unknown device 'tpu'"),
    (["game", "attribute", "--dataset", "diabetes", "--trials", "1"], "--trials must be at least 2"),
    (["game", "user", "--dataset", "shapes", "--attribute", "colour"], "takes no attribute"),
])
def test_bad_input_is_one_line_and_exit_status_2(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_game_refuses_rounds_whose_scores_cannot_fit(capsys, monkeypatch):
    import leaklab.cli.game as cg

    monkeypatch.setattr(cg, "available_memory", lambda device: 2**30)      # 1 GiB free
    assert main(["game", "attribute", "--dataset", "diabetes", "--rounds", "10000000", "--trials", "100"]) == 2
    err = capsys.readouterr().err
    assert "--rounds 10000000 x --trials 100" in err and "use --rounds 111848 or fewer" in err


def test_game_estimates_the_time_of_a_long_run(capsys, monkeypatch):
    import leaklab.cli.game as cg
    import leaklab.games as games

    calls = []
    monkeypatch.setattr(cg, "PROBE_ABOVE", 3)
    original = games.play

    def probe(*a, **kw):
        calls.append(kw["rounds"])
        return original(*a, **kw)

    monkeypatch.setattr(games, "play", probe)
    assert main(["game", "attribute", "--dataset", "diabetes", "--rounds", "4", "--trials", "20", "--json"]) == 0
    err = capsys.readouterr().err
    assert calls[:2] == [1, 3] and "note: 4 rounds in all; a probe took" in err and "expect about" in err


def test_attribute_game_states_the_replace_one_epsilon_first(capsys):
    from leaklab.defenses import parse_defense

    argv = ["game", "attribute", "--dataset", "diabetes", "--adversary", "informed", "--rounds", "2",
            "--trials", "20", "--defense", "dp:clip=1,noise=1"]
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    p = parse_defense("dp:clip=1,noise=1").privacy(delta=1e-5, sample_rate=1.0, steps=2)
    assert doc["game_epsilon"] == doc["epsilon_replace"] == p["epsilon_replace"]
    assert doc["game_epsilon"] > doc["epsilon"]                  # changing a record moves the sum by 2C
    assert doc["game_neighbours"] == "replace one record"
    code, out, err = run(argv, capsys)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("defense"))
    assert line.index(f"{p['epsilon_replace']:.3g}") < line.index(f"{p['epsilon']:.3g}"), line
