"""One-shot estimation in one federated run, and the audit of a user's own Opacus loop."""
import warnings

import numpy as np
import pytest
import torch

import leaklab
from leaklab.audit.oneshot import one_shot_federated
from leaklab.federated import train_federated


@pytest.fixture(scope="module")
def diabetes():
    return leaklab.load_dataset("diabetes")


def _model():
    return leaklab.build_model("mlp", (10,), 2, hidden=(32,), seed=0)


# --------------------------------------------------------------------------- one-shot
def test_one_shot_estimate_sees_the_canaries_and_stays_below_the_accountant(diabetes):
    """Small noise, two clients: the inserted canaries' cosines are clearly shifted (lower end > 0), and the
    estimate, for the final model only, is at most the accountant's epsilon within its interval."""
    r = one_shot_federated(_model(), diabetes, defense="dp:clip=1,noise=0.5", clients=2, rounds=10, canaries=200,
                           seed=0)
    assert r.epsilon_lower > 0, r.summary()
    assert r.epsilon_lower <= r.accountant_epsilon, r.summary()
    assert r.accountant == "rdp" and r.dimension == 418 and r.observed == 100
    assert r.inclusions.mean() == pytest.approx(10 * r.rate, rel=0.25)          # drawn at the records' rate
    assert r.config["defense"] == {"name": "dp", "clip": 1.0, "noise": 0.5}


def test_one_shot_null_canaries_never_drawn(diabetes):
    """Canaries that never join (rate 1e-9): the run is the plain run, draw for draw, and nothing is estimated."""
    plain = train_federated(_model(), diabetes, defense="dp:clip=1,noise=0.5", clients=2, rounds=10, seed=0,
                            progress=False)
    r = one_shot_federated(_model(), diabetes, defense="dp:clip=1,noise=0.5", clients=2, rounds=10, canaries=200,
                           rate=1e-9, seed=0)
    assert int(r.inclusions.sum()) == 0
    assert r.accuracy == plain.accuracy
    assert r.epsilon_lower == 0.0 and r.fit.details["mu_lower"] < 0 < r.fit.details["mu_upper"]


def test_one_shot_bad_input(diabetes):
    with pytest.raises(ValueError, match="observed"):
        one_shot_federated(_model(), diabetes, observed=1.5)
    with pytest.raises(ValueError, match="acts on the model"):
        one_shot_federated(_model(), diabetes, defense="vib:beta=0.01")
    with pytest.raises(ValueError, match="rate"):
        one_shot_federated(_model(), diabetes, rate=0.0)


# --------------------------------------------------------------------------- Opacus
def _opacus_run(sigma, n=1280, seed=0):
    from opacus import PrivacyEngine

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    engine = PrivacyEngine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, dl = engine.make_private(module=model, optimizer=opt, data_loader=dl, noise_multiplier=sigma,
                                             max_grad_norm=1.0)
    return engine, model, opt, dl


def test_opacus_audit_measures_the_noise_its_accountant_claims():
    from leaklab.audit.opacus_audit import audit_opacus

    engine, model, opt, dl = _opacus_run(1.0)
    own = type(opt).pre_step
    r = audit_opacus(model, opt, dl, epochs=2, accountant=engine.accountant, seed=0)
    assert "pre_step" not in vars(opt) and type(opt).pre_step is own            # the optimizer is restored
    d = r.fit.details
    assert r.steps == 160 and d["mu_lower"] < 1.0 < d["mu_upper"], r.summary()
    assert 0 < r.epsilon_lower <= r.step_epsilon
    assert r.implied_run_epsilon <= r.run_epsilon                               # at the measured noise
    assert r.run_epsilon == pytest.approx(engine.accountant.get_epsilon(delta=1e-5))


def test_opacus_audit_sees_lower_noise():
    """An optimizer whose noise is half what the user meant: the measured mu is near 2, beyond 1."""
    from leaklab.audit.opacus_audit import audit_opacus

    engine, model, opt, dl = _opacus_run(0.5)
    r = audit_opacus(model, opt, dl, epochs=1, accountant=engine.accountant, seed=1)
    assert r.fit.details["mu_lower"] > 1.3 and r.fit.details["mu_lower"] < 2.0 < r.fit.details["mu_upper"]


def test_opacus_audit_refuses_a_plain_optimizer():
    from leaklab.audit.opacus_audit import OpacusCanaryAudit

    with pytest.raises(TypeError, match="DPOptimizer"):
        OpacusCanaryAudit(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1))
    _, model, opt, dl = _opacus_run(1.0, n=64)
    audit = OpacusCanaryAudit(opt)
    audit.close()
    with pytest.raises(ValueError, match="at least 4"):
        audit.result()
