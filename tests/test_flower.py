"""leaklab.flower: what a Flower server records, the releases made of it, a defense put on Flower clients.

The federations run in this process (``run_inline``: the same ServerApp and ClientApp,
no Ray); one test runs Flower's own simulation engine (Ray) in a subprocess and checks
that it records the same. Skipped, with the reason, where flwr is missing or unsupported.
"""
from __future__ import annotations

import glob
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import pytest
import torch

import leaklab
from leaklab.release import release_one

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

#: Ray's own messages when its node cannot start (a machine too busy): not a failure of leaklab's.
_RAY_START_FAILURES = ("The current node timed out during startup", "Timed out waiting for file")


def _ray_logs(root: str) -> str:
    text = ""
    for f in glob.glob(os.path.join(root, "ray", "session_*", "logs", "raylet.*")):
        with open(f, errors="replace") as fh:
            text += fh.read()
    return text


@pytest.fixture(scope="module")
def lf():
    try:
        return importlib.import_module("leaklab.flower")
    except ImportError as exc:
        pytest.skip(f"leaklab.flower unavailable: {exc}")


@pytest.fixture(scope="module")
def setup(lf):
    data = leaklab.load_dataset("digits")
    model = leaklab.build_model("mlp", (1, 8, 8), 10, hidden=(32,), seed=0)
    return model, lf.split(data, 2, 8, seed=0), data


@pytest.fixture(scope="module")
def fedsgd(lf, setup):
    model, parts, _ = setup
    return lf.simulate(model, parts, rounds=2, protocol="fedsgd", lr=0.1, batch_size=1, seed=0)


@pytest.fixture(scope="module")
def fedavg(lf, setup):
    model, parts, _ = setup
    return lf.simulate(model, parts, rounds=2, protocol="fedavg", lr=0.1, local_steps=1, batch_size=1, seed=0)


@pytest.fixture(scope="module")
def fedavg_dp(lf, setup):
    model, parts, _ = setup
    return lf.simulate(model, parts, rounds=2, protocol="fedavg", lr=0.1, local_steps=1, batch_size=1, seed=0,
                       defense="dp:clip=1,noise=1", delta=1e-5)


def test_recorded_fedsgd_update_equals_leaklab_release(fedsgd, setup):
    model, _, _ = setup
    updates = fedsgd.recorder.updates()
    assert len(updates) == 4 and {u.round for u in updates} == {1, 2}
    assert len({u.node_id for u in updates}) == 2
    first = fedsgd.recorder.rounds[1].sent
    assert all(torch.equal(first[k], v.detach()) for k, v in model.named_parameters())   # what was sent
    for u in updates:
        assert u.kind == "gradient" and u.num_examples == 1 and u.config["lr"] == 0.1
        rel = u.release(model)
        assert list(rel.grads) == [k for k, _ in model.named_parameters()]
        x, y = fedsgd.truth(u)
        ref = release_one(rel.model, x, y)               # leaklab's own release at the round's parameters
        for k in ref:
            assert torch.allclose(rel.grads[k], ref[k], atol=1e-6, rtol=0), k
    # round 2 was sent the parameters FedSGD stepped to: not the initial ones
    assert not torch.equal(fedsgd.recorder.rounds[2].sent["net.1.weight"], first["net.1.weight"])


def test_fedavg_one_step_is_reconstructed_exactly(fedavg, setup):
    model, _, _ = setup
    for u in fedavg.recorder.updates():
        assert u.kind == "parameters" and u.config["local-steps"] == 1
        rel = u.release(model)
        assert rel.exact
        x, y = fedavg.truth(u)
        rec = rel.reconstruct(input_shape=(1, 8, 8), attack="analytic")
        assert float(((rec.x.reshape(x.shape) - x) ** 2).mean()) < 1e-8
        assert rec.y.reshape(-1).tolist() == y.tolist()
    scores = fedavg.attack("analytic")
    assert len(scores) == 4 and min(s["psnr"][0] for s in scores) > 60


def test_dp_mod_stops_the_attack_and_reports_the_accountants_epsilon(fedavg_dp, setup):
    from opacus.accountants import RDPAccountant

    from leaklab.defenses import DPSGD

    model, parts, _ = setup
    scores = fedavg_dp.attack("analytic")
    assert len(scores) == 4
    assert max(s["psnr"][0] for s in scores) < 15
    for u in fedavg_dp.recorder.updates():
        q, steps = 1 / len(parts[0]), u.round            # batch 1 of 8 records, one noisy step per round
        assert u.config["defense"] == "dp:clip=1,noise=1"
        assert u.config["sample-rate"] == q and u.config["steps"] == steps
        ours = DPSGD(clip=1, noise=1).epsilon(delta=1e-5, sample_rate=q, steps=steps)
        acc = RDPAccountant()
        acc.history = [(1.0, q, steps)]
        assert u.config["epsilon"] == pytest.approx(ours, rel=1e-12)
        assert u.config["epsilon"] == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    eps = {u.round: u.config["epsilon"] for u in fedavg_dp.recorder.updates()}
    assert eps[2] > eps[1]                               # privacy spent grows with the client's steps


def test_recorder_never_changes_what_the_strategy_aggregates(lf, fedavg, setup):
    from leaklab.fl import aggregate

    model, parts, _ = setup
    plain = lf.simulate(model, parts, rounds=2, protocol="fedavg", lr=0.1, local_steps=1, batch_size=1, seed=0,
                        record=False)
    assert plain.recorder is None
    for k in plain.params:
        assert torch.equal(plain.params[k], fedavg.params[k]), k
    for r, rec in fedavg.recorder.rounds.items():          # the aggregate is FedAvg's mean of what was recorded
        mean = aggregate([u.returned for u in rec.updates], [u.num_examples for u in rec.updates])
        for k in mean:
            assert torch.allclose(rec.aggregate[k], mean[k], atol=1e-6), (r, k)


def test_secure_aggregation_shows_only_the_sum(lf, fedsgd, setup):
    model, parts, _ = setup
    rec = fedsgd.recorder.rounds[1]
    view = rec.secure_view()
    total = {k: sum(u.gradient()[k] for u in rec.updates) for k in view.total}
    assert view.clients == 2 and view.batch_size == 2
    assert all(torch.allclose(view.total[k], total[k]) for k in total)
    secure = lf.simulate(model, parts, rounds=1, protocol="fedsgd", lr=0.1, batch_size=1, seed=0, secure=True)
    with pytest.raises(ValueError, match="only the sum"):
        secure.recorder.updates()
    sview = secure.recorder.rounds[1].secure_view()
    assert all(torch.allclose(sview.total[k], view.total[k], atol=1e-6) for k in total)
    # the attack treats the sum as one release of both clients' records, whose owners it cannot tell
    out = sview.reconstruct(model, input_shape=(1, 8, 8), attack="analytic")
    assert out.x.shape == (2, 1, 8, 8)
    assert 0 <= int(out.info["recovered"][0]) <= 2


def test_defense_mod_on_a_plain_flower_client(lf, setup):
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    model, _, _ = setup
    step = {k: torch.full_like(v, 0.01) * (1 + i) for i, (k, v) in enumerate(model.named_parameters())}

    def plain_app(mods):
        app = ClientApp(mods=mods)

        @app.train()
        def train(msg, context):                       # a client that knows nothing of leaklab
            sd = msg.content["arrays"].to_torch_state_dict()
            new = {k: sd[k] - step[k] for k in sd}
            return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": 1})}),
                           reply_to=msg)
        return app

    def run(mods):
        rec = lf.RecordingStrategy(FedAvg(fraction_evaluate=0.0, min_available_nodes=1, min_train_nodes=1),
                                   model=model)
        server = ServerApp()

        @server.main()
        def main(grid, context):
            rec.start(grid=grid, initial_arrays=lf.to_arrays(model), num_rounds=1,
                      train_config=ConfigRecord({"lr": 0.5}))
        lf.run_inline(server, plain_app(mods), 1)
        return rec

    signed = run([lf.DefenseMod("sign")]).updates()[0]
    assert signed.config["defense"] == "sign"
    g = signed.gradient()                               # what left: theta - lr * sign((theta - theta_client) / lr)
    assert all(torch.allclose(g[k], torch.ones_like(g[k]), atol=1e-5) for k in g)
    bare = run([]).updates()[0].gradient()
    assert all(torch.allclose(bare[k], step[k] / 0.5, atol=1e-5) for k in bare)
    assert not all(torch.allclose(bare[k], torch.ones_like(bare[k]), atol=1e-3) for k in bare)
    refused = run([lf.DefenseMod("dp:clip=1,noise=1")])
    assert refused.rounds[1].updates == []              # an error reply: dp cannot be applied after the fact
    assert "clips each record" in refused.rounds[1].errors[0][1]


def test_ray_simulation_records_what_the_inline_run_records(lf, fedavg):
    # Flower's own simulation engine (Ray), in a subprocess so that Ray never lives in the test process
    code = (
        "import json, torch, leaklab\n"
        "from leaklab import flower as lf\n"
        "model = leaklab.build_model('mlp', (1, 8, 8), 10, hidden=(32,), seed=0)\n"
        "parts = lf.split(leaklab.load_dataset('digits'), 2, 8, seed=0)\n"
        "run = lf.simulate(model, parts, rounds=2, protocol='fedavg', lr=0.1, local_steps=1, batch_size=1,\n"
        "                  seed=0, backend='ray')\n"
        "import ray\n"
        "print(json.dumps({'params': {k: v.tolist() for k, v in run.params.items()},\n"
        "                  'updates': len(run.recorder.updates()), 'ray_up': ray.is_initialized(),\n"
        "                  'psnr': min(s['psnr'][0] for s in run.attack('analytic'))}))\n")
    ray_tmp = tempfile.mkdtemp(prefix="llray-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short: sockets
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "RAY_TMPDIR": ray_tmp}
    out_f, err_f = (tempfile.TemporaryFile(mode="w+") for _ in range(2))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=out_f, stderr=err_f, text=True, env=env,
                            start_new_session=True)
    start, dead_node = time.monotonic(), False
    try:
        while proc.poll() is None:                     # a raylet that died at start leaves the driver waiting:
            time.sleep(2)                              # watch its logs instead of waiting for the time-out
            dead_node = any(s in _ray_logs(ray_tmp) for s in _RAY_START_FAILURES)
            if dead_node or time.monotonic() - start > 240:
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)        # the run and every Ray process it started
        except ProcessLookupError:
            pass
        proc.wait()
        out_f.seek(0), err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if dead_node or (proc.returncode != 0 and any(s in stderr for s in _RAY_START_FAILURES)):
        pytest.skip("Ray could not start its node on this machine (overloaded); the simulation engine was not run")
    if proc.returncode < 0:                            # killed by us: it neither finished nor failed to start
        pytest.fail(f"the Ray simulation did not finish in 240 s: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-2000:]
    got = json.loads(stdout.strip().splitlines()[-1])
    assert got["updates"] == 4 and not got["ray_up"] and got["psnr"] > 60
    for k, v in fedavg.params.items():
        assert torch.allclose(torch.tensor(got["params"][k]), v, atol=1e-6), k


def test_import_leaklab_does_not_import_flwr():
    code = ("import sys, leaklab, leaklab.fl, leaklab.attacks, leaklab.defenses\n"
            "from leaklab.cli import build_parser\n"
            "build_parser()\n"
            "print('flwr' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ})
    assert out.stdout.split() == ["False", "False"]


def _import_flower_with(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "flwr", fake)
    monkeypatch.delitem(sys.modules, "leaklab.flower", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("leaklab.flower")
    return str(info.value)


def test_a_clear_one_line_error_when_flwr_is_missing(monkeypatch):
    msg = _import_flower_with(monkeypatch, None)        # None in sys.modules: "import flwr" fails
    assert "\n" not in msg
    assert "needs Flower" in msg and "not installed" in msg and 'pip install "leaklab[flower]"' in msg


def test_a_clear_one_line_error_when_flwr_is_unsupported(monkeypatch):
    fake = types.ModuleType("flwr")
    fake.__version__ = "1.30.0"
    msg = _import_flower_with(monkeypatch, fake)
    assert "\n" not in msg
    assert "found flwr 1.30.0" in msg and ">=1.42,<1.43" in msg


def _demo(capsys, *argv):
    from leaklab.cli import main

    code = main(["flower", "demo", "--dataset", "digits", "--clients", "2", "--rounds", "2", "--records", "4",
                 "--json", *argv])
    out = capsys.readouterr()
    return code, out


def test_cli_demo_recovers_every_record_and_dp_stops_it(lf, capsys):
    from leaklab.defenses import DPSGD

    code, out = _demo(capsys)
    assert code == 0, out.err
    got = json.loads(out.out)
    assert got["flwr"] == lf.FLWR_VERSION and got["defense"] == {"name": "none"} and got["epsilon"] is None
    assert got["records_attacked"] == 4 == got["recovered_40db"] and got["psnr_min"] >= 40
    assert {(r["round"], r["client"]) for r in got["results"]} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert all(0.99 <= r["ssim"][0] <= 1.0 + 1e-6 for r in got["results"])
    code, out = _demo(capsys, "--defense", "dp:clip=1,noise=1")
    assert code == 0, out.err
    dp = json.loads(out.out)
    assert dp["psnr_max"] < 20 and dp["recovered_40db"] == 0
    # FedSGD, batch 1 of 4 records, one noisy step per round: after round 2, two steps at rate 1/4
    assert dp["epsilon"] == pytest.approx(DPSGD(clip=1, noise=1).epsilon(delta=1e-5, sample_rate=0.25, steps=2))


def test_cli_demo_errors_are_one_line(lf, capsys, monkeypatch):
    code, out = _demo(capsys, "--batch-size", "5")
    assert code == 2 and out.err.startswith("leaklab: error: --batch-size 5 exceeds the 4 --records")
    code, out = _demo(capsys, "--defense", "dp:clip=0")
    assert code == 2 and out.err.startswith("leaklab: error:") and "clip" in out.err
    monkeypatch.setitem(sys.modules, "flwr", None)
    monkeypatch.delitem(sys.modules, "leaklab.flower", raising=False)
    monkeypatch.delattr(leaklab, "flower", raising=False)
    code, out = _demo(capsys)
    assert code == 2 and out.err.startswith("leaklab: error: leaklab.flower needs Flower")
    assert out.err.count("\n") == 1


def test_cli_demo_idlg_finds_every_label(lf, capsys):
    code, out = _demo(capsys, "--attack", "idlg", "--rounds", "1", "--iters", "10")
    assert code == 0, out.err
    got = json.loads(out.out)
    assert got["attack"] == "idlg" and got["records_attacked"] == 2
    for r in got["results"]:                             # iDLG reads a lone record's label off the last layer
        assert r["labels_found"] == r["labels"]
        assert 0 < r["psnr"][0] < 200 and -1 <= r["ssim"][0] <= 1
