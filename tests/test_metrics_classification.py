import numpy as np
import pytest
import torch

from leaklab.metrics.classification import (accuracy, advantage, auroc, auroc_ci, score_guesses,
                                            tpr_at_fpr)


def test_perfect_random_and_reversed_scores():
    y = np.array([0, 1] * 50)
    assert auroc(y, y * 2.0 - 1) == 1.0
    assert auroc(y, 1.0 - y) == 0.0
    rng = np.random.default_rng(0)
    assert abs(auroc(np.tile(y, 20), rng.normal(size=2000)) - 0.5) < 0.05


def test_interval_contains_the_estimate_and_narrows_with_more_trials():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 2000):
        y = rng.integers(0, 2, n)
        s = y + rng.normal(size=n)
        for method in ("hanley", "bootstrap"):
            lo, hi = auroc_ci(y, s, method=method, n_boot=100)
            assert lo <= auroc(y, s) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def test_hanley_and_bootstrap_agree():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    s = y + rng.normal(size=1000)
    h = auroc_ci(y, s, method="hanley")
    b = auroc_ci(y, s, method="bootstrap", n_boot=200)
    assert abs(h[0] - b[0]) < 0.02 and abs(h[1] - b[1]) < 0.02


def test_multiclass_is_one_vs_rest_and_accuracy_is_argmax():
    y = torch.tensor([0, 1, 2, 2])
    s = torch.tensor([[3.0, 0, 0], [0, 2.0, 1], [0, 0, 1.0], [1.0, 0, 0]])
    assert accuracy(y, s) == 0.75
    assert auroc(y, s) == pytest.approx(np.mean([1.0, 1.0, 0.5]))
    sc = score_guesses(y.tolist() * 10, s.repeat(10, 1))
    assert sc.tpr_at_1pct_fpr is None and sc.trials == 40


def test_advantage_tpr_and_summary():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.8, 0.95, 0.99])
    assert advantage(y, s) == pytest.approx(0.75)
    assert tpr_at_fpr(y, s, fpr=0.0) == pytest.approx(0.5)
    assert accuracy(y, s, threshold=0.35) == 0.875
    assert "AUROC" in score_guesses(y, s).summary()


@pytest.mark.parametrize("labels,scores,error,message", [
    ([0, 1], [0.5], ValueError, r"scores must have shape \(2,\)"),
    ([0, 1], [0.5, float("nan")], ValueError, "NaN or inf"),
    ([1, 1], [0.5, 0.2], ValueError, "at least two different secret values"),
    ([0, 2], [0.5, 0.2], ValueError, "need binary labels"),
    ([0, 3], [[0.5, 0.2], [0.1, 0.2]], ValueError, r"must lie in \[0, 1\]"),
    ([[0, 1]], [0.5], ValueError, "labels must be one-dimensional"),
    ([0.5, 1], [0.5, 0.2], TypeError, "integer secret values"),
])
def test_bad_input(labels, scores, error, message):
    with pytest.raises(error, match=message):
        auroc(labels, scores)


def test_bad_options():
    with pytest.raises(ValueError, match="choose from: auto, bootstrap, hanley"):
        auroc_ci([0, 1], [0.1, 0.2], method="delong")
    with pytest.raises(ValueError, match="method 'hanley' needs two secret values"):
        auroc_ci([0, 1, 2], np.eye(3), method="hanley")


def test_torch_logistic_regression_matches_scikit_learn():
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from leaklab.metrics._logistic import Logistic

    rng = np.random.default_rng(0)
    for K in (2, 3):
        x = rng.normal(size=(300, 5)) * [1, 10, 0.1, 1, 3]
        y = (x[:, 0] + 0.1 * x[:, 1] + rng.normal(size=300) > 0).astype(int) + (K == 3) * (x[:, 3] > 1)
        ours = Logistic(C=0.5).fit(x, y).predict_proba(x)
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=5000, tol=1e-10)).fit(x, y)
        assert np.abs(ours - ref.predict_proba(x)).max() < 1e-4
