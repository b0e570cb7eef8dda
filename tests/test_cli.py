import json
import subprocess
import sys

import pytest

from leaklab.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_data_list_json_has_every_field(capsys):
    code, out, _ = run(["data", "list", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert {"digits", "diabetes", "lfw", "shapes", "mnist", "cifar10", "adult"} <= names
    for r in rows:
        assert {"name", "modality", "size", "games", "embedded"} <= set(r)
        assert isinstance(r["embedded"], bool) and isinstance(r["games"], list)


def test_data_list_table(capsys):
    code, out, _ = run(["data", "list"], capsys)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["name", "modality", "size"]
    assert any(line.startswith("shapes") for line in out.splitlines())


def test_data_show_writes_a_sample_grid(tmp_path, capsys):
    code, out, _ = run(["data", "show", "lfw", "--out", str(tmp_path), "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["name"] == "lfw" and summary["class_counts"] == [100, 100]
    png = tmp_path / "lfw.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_data_show_tabular(capsys):
    code, out, _ = run(["data", "show", "diabetes"], capsys)
    assert code == 0 and "attribute    sex" in out


@pytest.mark.parametrize("argv, pattern", [
    (["data", "show", "no-such-set"], "leaklab: error: unknown dataset 'no-such-set'; choose from: adult, celeba, cifar10"),  # other tests may register more
    (["data", "shw"], "invalid choice: 'shw' (choose from 'list', 'show')"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_user_errors_are_one_line(argv, pattern, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert pattern in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "leaklab", "data", "show", "no-such-set"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("leaklab: error: unknown dataset 'no-such-set'; choose from:")
    assert "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "leaklab", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "data" in ok.stdout
