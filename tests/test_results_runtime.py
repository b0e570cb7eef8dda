import json

import pytest
import torch

import leaklab
from leaklab.profiles import PROFILES, get_profile
from leaklab.results import Record, completed, fingerprint, read_records, write_records
from leaklab.runtime import get_device, make_generator, seed_everything


def test_records_round_trip_as_json_lines(tmp_path):
    p = tmp_path / "sub" / "runs.jsonl"
    r1 = Record("demo", {"batch_size": 4}, seed=1, numbers={"auroc": 0.9, "psnr": float("inf")}, wall_time=1.5)
    r2 = Record("demo", {"batch_size": 8}, seed=1, numbers={"auroc": torch.tensor(0.7)})
    write_records(p, [r1])
    write_records(p, [r2])
    back = read_records(p)
    assert [r.config["batch_size"] for r in back] == [4, 8]
    assert back[0].numbers["psnr"] == float("inf") and back[1].numbers["auroc"] == pytest.approx(0.7)
    assert "psnr_infinite" not in back[0].numbers                  # the mark is read back as the infinity
    raw = json.loads(p.read_text().splitlines()[0])["numbers"]      # strict JSON: null and a mark, no string
    assert raw["psnr"] is None and raw["psnr_infinite"] == 1 and "Infinity" not in p.read_text()
    assert back[0].leaklab_version == leaklab.__version__ and back[0].torch_version == torch.__version__
    assert completed(p) == {r1.key(), r2.key()}
    assert json.loads(r1.to_json())["numbers"]["auroc"] == 0.9


def test_reading_a_bad_line_names_it(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"kind": "x", "config": {}, "seed": 0, "numbers": {}}\n{"kind": "x"}\n')
    with pytest.raises(ValueError, match="line 2: not a leaklab record"):
        read_records(p)


def test_profiles(monkeypatch):
    monkeypatch.setenv("LEAKLAB_PROFILE", "paper")
    assert get_profile().name == "paper"
    monkeypatch.delenv("LEAKLAB_PROFILE")
    assert get_profile().name == "book"
    assert get_profile("smoke").pick(smoke=1, book=2, paper=3) == 1
    # smoke is the smallest profile on every size knob
    for f in ("trials", "iters", "train_steps", "max_samples"):
        assert getattr(PROFILES["smoke"], f) < getattr(PROFILES["book"], f) <= getattr(PROFILES["paper"], f)
    with pytest.raises(ValueError, match="unknown profile 'huge'.*smoke, book, paper"):
        get_profile("huge")


def test_devices():
    assert get_device("cpu").type == "cpu"
    assert get_device().type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            get_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu9'"):
        get_device("tpu9")


def test_seeding_repeats():
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    g1, g2 = make_generator(7), make_generator(7)
    assert torch.equal(torch.rand(2, generator=g1), torch.rand(2, generator=g2))
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything("5")


def test_fingerprint_changes_with_any_value_shape_or_dtype():
    x, y = torch.arange(12.0).reshape(4, 3), torch.tensor([0, 1, 0, 1])
    assert fingerprint(x, y) == fingerprint(x.clone(), y.clone())
    x2 = x.clone()
    x2[3, 2] += 1e-3
    assert len({fingerprint(x, y), fingerprint(x2, y), fingerprint(x.reshape(3, 4), y), fingerprint(x.double(), y),
                fingerprint(x, y.flip(0)), fingerprint(y, x)}) == 6
    with pytest.raises(TypeError, match="argument 1"):
        fingerprint(x, [0, 1])


@pytest.mark.parametrize("make", [lambda tmp: str(tmp / "runs") + "/", lambda tmp: tmp, lambda tmp: ""])
def test_write_records_refuses_a_folder_before_writing(tmp_path, make):
    target = make(tmp_path)
    r = Record("demo", {"batch_size": 4}, seed=0, numbers={"auroc": 0.9})
    with pytest.raises(ValueError, match="must name a JSON-lines file"):
        write_records(target, [r])
    assert not (tmp_path / "runs").exists()                        # nothing created on the way
    assert list(tmp_path.iterdir()) == []
