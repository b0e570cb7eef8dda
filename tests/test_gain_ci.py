"""The gain over phi carries a paired confidence interval: both adversaries scored on the same resampled trials."""
import numpy as np
import pytest

from leaklab.games import play
from leaklab.metrics.classification import auroc, auroc_ci, auroc_gain_ci


def _trials(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = 0.8 * y + rng.normal(size=n)                   # phi alone: some signal
    return rng, y, base


def test_the_same_scores_gain_exactly_nothing():
    _, y, base = _trials()
    assert auroc_gain_ci(y, base, base) == (0.0, 0.0)


def test_pairing_cancels_what_both_share():
    """A release adding a little to phi: the paired interval is far narrower than either AUROC's own."""
    rng, y, base = _trials()
    s = base + 0.3 * y + 0.1 * rng.normal(size=y.shape[0])
    lo, hi = auroc_gain_ci(y, s, base, seed=1)
    gain = auroc(y, s) - auroc(y, base)
    assert lo <= gain <= hi
    assert lo > 0                                          # a real gain is told apart from none
    alo, ahi = auroc_ci(y, s)
    blo, bhi = auroc_ci(y, base)
    assert hi - lo < 0.5 * min(ahi - alo, bhi - blo)
    assert auroc_gain_ci(y, s, base, seed=1) == (lo, hi)   # seeded: the same interval again


def test_no_gain_stays_within_the_interval():
    """Scores that add only noise to phi: the interval holds 0 (or lies below it), never above."""
    rng, y, base = _trials()
    covered = 0
    for k in range(5):
        s = base + 0.5 * rng.normal(size=y.shape[0])
        lo, hi = auroc_gain_ci(y, s, base, seed=k, n_boot=300)
        assert lo < 0.02
        covered += lo <= 0 <= hi or hi < 0
    assert covered == 5


def test_bad_input_is_one_clear_error():
    _, y, base = _trials(20)
    with pytest.raises(ValueError, match="scores must have shape"):
        auroc_gain_ci(y, base, base[:-1])


def test_the_record_and_summary_carry_the_interval():
    r = play("attribute", "diabetes", adversary="combined", batch_size=4, trials=64, seed=0, progress=False)
    n = r.record().numbers
    lo, hi = n["gain_over_phi_ci"]
    assert lo <= n["gain_over_phi"] <= hi
    assert (lo, hi) == r.gain_ci()
    assert f"gain over phi {n['gain_over_phi']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in repr(r)
