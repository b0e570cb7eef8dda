"""Privacy accounting in one place: an event -> epsilon, checked against Opacus and asked by every caller."""
import math

import pytest

from leaklab.privacy import PrivacyEvent, epsilon


def _opacus(noise, q, steps, delta, kind="rdp"):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=noise, sample_rate=q)
    return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize("noise, q, steps", [(1.0, 1.0, 1), (2.0, 0.1, 20), (0.8, 0.02, 50)])
def test_add_remove_is_opacus_and_replace_one_is_half_the_noise(noise, q, steps):
    e = PrivacyEvent(noise, q, steps).epsilon(delta=1e-5)
    assert e == pytest.approx(_opacus(noise, q, steps, 1e-5), rel=1e-9)       # Opacus stepped one step at a time
    rep = PrivacyEvent(noise, q, steps, "replace-one").epsilon(delta=1e-5)
    assert rep == pytest.approx(_opacus(noise / 2, q, steps, 1e-5), rel=1e-9)
    assert rep > e                                                            # replacing moves the sum twice as far
    assert PrivacyEvent(noise, q, steps + 1).epsilon(delta=1e-5) > e          # more releases spend more
    assert PrivacyEvent(noise, q, steps).epsilon(delta=1e-3) < e              # a larger delta buys a smaller epsilon
    rec = PrivacyEvent(noise, q, steps, "replace-one").record(delta=1e-5)
    assert rec["epsilon"] == rec["epsilon_replace"] == rep and rec["epsilon_add_remove"] == e


def test_prv_and_no_noise():
    assert PrivacyEvent(2.0, 1.0, 1).epsilon(delta=1e-5, accountant="prv") == pytest.approx(
        _opacus(2.0, 1.0, 1, 1e-5, "prv"), rel=1e-6)
    assert PrivacyEvent(0.0, 0.5, 3).epsilon(delta=1e-5) == math.inf


def test_every_caller_asks_the_same_event():
    from leaklab.audit.canaries import attribute_accountant_epsilon
    from leaklab.defenses import DPSGD

    d = DPSGD(clip=1.0, noise=1.5)
    assert d.epsilon(delta=1e-5, sample_rate=0.2, steps=7) == epsilon(1.5, delta=1e-5, sample_rate=0.2, steps=7)
    p = d.privacy(delta=1e-5, sample_rate=1.0, steps=3)
    assert p["epsilon_replace"] == epsilon(1.5, delta=1e-5, steps=3, neighbours="replace-one")
    assert attribute_accountant_epsilon(d, delta=1e-5, rounds=3) == p["epsilon_replace"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"noise": -1.0}, ValueError, "noise must be a finite number >= 0, got -1.0"),
    ({"noise": "2"}, TypeError, "noise must be a number, got str"),
    ({"noise": 1.0, "sample_rate": 0.0}, ValueError, "sample_rate must be > 0"),
    ({"noise": 1.0, "steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
    ({"noise": 1.0, "neighbours": "swap"}, ValueError, "neighbours"),
])
def test_bad_events_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        PrivacyEvent(**kwargs)


def test_bad_delta_and_accountant():
    with pytest.raises(ValueError, match=r"delta must lie in \(0, 1\)"):
        PrivacyEvent(1.0).epsilon(delta=0.0)
    with pytest.raises(ValueError, match="accountant"):
        PrivacyEvent(1.0).epsilon(delta=1e-5, accountant="moments")
