"""A small multinomial logistic regression in torch (standardised inputs, L2 penalty).

It fits the same objective as scikit-learn's ``LogisticRegression(C=C)`` on
standardised features, ``sum_i log-loss_i + ||W||^2 / (2 C)`` (one logit for two
classes, multinomial beyond; the intercept unpenalised), with L-BFGS in double precision, so that the games need not
import scikit-learn (about a second of start-up) for a baseline fitted on a few
hundred records.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Logistic"]


class Logistic:
    """``fit(x, y)`` then ``predict_proba(x)``; ``classes_`` holds the labels seen, as in scikit-learn."""

    def __init__(self, *, C: float = 1.0, max_iter: int = 1000):
        self.C = float(C)
        self.max_iter = int(max_iter)

    def fit(self, x, y) -> Logistic:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        target = torch.as_tensor(np.searchsorted(self.classes_, y), dtype=torch.long)
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0, unbiased=False)
        self.scale_[self.scale_ == 0] = 1.0
        z = (x - self.mean_) / self.scale_
        K = len(self.classes_)
        k = 1 if K == 2 else K              # two classes: one logit, as scikit-learn (and its penalty)
        W = torch.zeros(z.shape[1], k, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=self.max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(self._logits(z, W, b), target, reduction="sum") + W.pow(2).sum() / (2 * self.C)
            loss.backward()
            return loss

        opt.step(closure)
        self.coef_, self.intercept_ = W.detach(), b.detach()
        return self

    @staticmethod
    def _logits(z, W, b):
        out = z @ W + b
        return torch.cat([torch.zeros_like(out), out], 1) if W.shape[1] == 1 else out

    def predict_proba(self, x) -> np.ndarray:
        z = (torch.as_tensor(np.asarray(x), dtype=torch.float64) - self.mean_) / self.scale_
        return torch.softmax(self._logits(z, self.coef_, self.intercept_), 1).numpy()
