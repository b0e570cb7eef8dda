"""The Secret Polarization Network (SPN) as a model-side defense, in our reading of paper A.

Paper A (Fan et al., 2020) proposes to thwart reconstruction by keeping a part of
the network secret. We build it on the polarization loss of the Deep Polarized
Network (Fan et al., IJCAI 2020):

* every class ``c`` gets a code ``t_c`` in ``{-1, +1}^d`` (``d = bits``, 64 by default),
  chosen greedily among random sign vectors for a large minimum Hamming distance;
* a bias-free linear *polarization head* ``h(x) = P f(x)`` in ``R^d`` sits on the
  penultimate features ``f(x)`` of the classifier (beside its task head), initialised
  with ``N(0, 0.01^2)`` weights;
* the polarization loss pushes every bit of ``h`` to the sign of the class code with
  margin ``m``: ``L_pol = mean_i sum_k max(0, m - h_k(x_i) t_{y_i, k})``;
* the client trains on ``CE + alpha * L_pol``.

What is secret (our reading): the head ``P`` and the codes ``t`` are drawn by each
client (from its own ``seed``, on a stream no adversary's draw shares: see
:func:`secret_generator`) and never leave it. The games seed the client's draw from
the game's seed, so every game seed plays against another secret. The wrapped model lists ``P``'s name in
``secret_parameters``, so :func:`leaklab.release.release` never releases it; the codes
are a buffer, not a parameter, so they are never part of a release either. The
shared gradient is that of ``CE + alpha * L_pol`` with respect to the shared
parameters (the body and the task head), and the server updates only those.

Prediction. ``forward`` returns the task head's logits, so that every tool that
calls ``model(x)`` (accuracy, attacks) sees an ordinary classifier. :meth:`SPNModel.predict`
also offers ``by="codes"`` (the class whose code is nearest to ``sign(h(x))`` in
Hamming distance, DPN's rule) and ``by="both"`` (the mean of the task head's softmax
and a softmax over the codes' agreement with ``h(x)``). Chapter 10 measures all three.

>>> import torch, leaklab
>>> from leaklab.release import release
>>> from leaklab.defenses import make_defense
>>> base = leaklab.build_model("mlp", (4,), 3, hidden=(5,), seed=0)
>>> spn = make_defense("spn", alpha=1.0, bits=8).wrap(base, seed=1)
>>> spn.secret_parameters
('polar.weight',)
>>> sorted(release(spn, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)))
['base.net.1.bias', 'base.net.1.weight', 'base.net.3.bias', 'base.net.3.weight']
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int
from ..defenses.base import Defense, register_defense
from ..defenses.gradient import _number
from ..defenses.vib import _last_linear

__all__ = ["SPN", "SPNModel", "polarization_loss", "class_codes", "hamming_predict", "secret_generator",
           "PREDICT_BY", "SECRET_ROLES"]

#: The prediction rules of an SPN model (see :meth:`SPNModel.predict`).
PREDICT_BY = ("task", "codes", "both")


def polarization_loss(h: torch.Tensor, codes: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
    """DPN's polarization loss ``mean_i sum_k max(0, m - h_k(x_i) t_{y_i, k})``.

    ``h`` ``(B, d)`` are the head's outputs, ``codes`` ``(B, d)`` the codes ``t_{y_i}`` of
    each record's class (entries in ``{-1, +1}``, or their relaxation in ``[-1, 1]``).
    """
    if h.shape != codes.shape:
        raise ValueError(f"codes must have the shape of h {tuple(h.shape)}, got {tuple(codes.shape)}")
    return F.relu(margin - h * codes).sum(-1).mean()


def class_codes(num_classes: int, bits: int, *, generator: torch.Generator | None = None,
                candidates: int = 64) -> torch.Tensor:
    """``num_classes`` codes in ``{-1, +1}^bits`` with a large minimum Hamming distance.

    Greedy: the first code is the sign of a Gaussian; each next one is, among
    ``candidates`` such random codes, the one farthest (in minimum Hamming distance)
    from the codes already chosen. Returns a float tensor ``(num_classes, bits)``.
    """
    check_positive_int("num_classes", num_classes, minimum=2)
    check_positive_int("bits", bits)
    check_positive_int("candidates", candidates)

    def draw(n):
        s = torch.randn(n, bits, generator=generator).sign()
        return torch.where(s == 0, torch.ones_like(s), s)

    codes = [draw(1)[0]]
    for _ in range(1, num_classes):
        cand = draw(candidates)                                   # (n, bits)
        chosen = torch.stack(codes)                               # (c, bits)
        dist = (cand[:, None, :] != chosen[None]).sum(-1).min(1).values
        codes.append(cand[int(dist.argmax())])
    return torch.stack(codes)


def hamming_predict(h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The class whose code is nearest to ``sign(h)`` in Hamming distance (ties: the lowest class)."""
    s = torch.where(h >= 0, torch.ones_like(h), -torch.ones_like(h))
    dist = (s[:, None, :] != codes[None]).sum(-1)                  # (B, K)
    return dist.argmin(1)


#: The roles whose secrets are drawn from separate streams (:func:`secret_generator`).
SECRET_ROLES = ("client", "adversary")
_HALF = 2 ** 63


def secret_generator(role: str, seed: int | None) -> torch.Generator:
    """The generator of ``role``'s secret head and codes for ``seed`` (``None``: fresh entropy).

    The two roles draw from disjoint streams: a client's generator is seeded with
    ``seed`` itself (``0 <= seed < 2**63``), an adversary's with a hash of ``seed``
    (numpy's ``SeedSequence``) moved into ``[2**63, 2**64)``. No adversary's seed can
    therefore give a client's generator, whatever the two seeds are.
    """
    import numpy as np

    check_choice("role", role, SECRET_ROLES)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed is not None and not 0 <= seed < _HALF:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if role == "client":
        gen = torch.Generator()
        if seed is None:
            gen.manual_seed(int(torch.Generator().seed()) % _HALF)
        else:
            gen.manual_seed(seed)
        return gen
    seq = np.random.SeedSequence(seed, spawn_key=(SECRET_ROLES.index(role),))
    lo, hi = (int(v) for v in seq.generate_state(2, np.uint32))
    return torch.Generator().manual_seed(_HALF | ((hi << 32 | lo) % _HALF))


class _Tap:
    """A forward pre-hook that keeps the input of the task head (the penultimate features)."""

    def __init__(self):
        self.value = None

    def __call__(self, _module, args):
        self.value = args[0]


class SPNModel(nn.Module):
    """A classifier with a secret polarization head and secret class codes.

    ``base`` is the classifier (its last ``nn.Linear`` is the task head), kept under
    its own parameter names with the prefix ``base.``; ``polar`` the bias-free head
    ``features -> bits`` (secret); ``codes`` the ``(num_classes, bits)`` buffer of class
    codes (secret). ``objective(x, y) = CE + alpha * L_pol`` is what the client trains on.
    """

    secret_parameters = ("polar.weight",)
    #: the buffers the client keeps secret besides its secret parameters
    secret_buffers = ("codes",)
    stochastic = False

    def __init__(self, base: nn.Module, *, alpha: float, bits: int, margin: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.task_head_name, last = _last_linear(base)
        self.base = base
        self.alpha, self.bits, self.margin = float(alpha), int(bits), float(margin)
        self.num_classes = last.out_features
        self.features = last.in_features
        self.polar = nn.Linear(last.in_features, bits, bias=False)
        with torch.no_grad():
            self.polar.weight.copy_(0.01 * torch.randn(bits, last.in_features, generator=generator))
        self.register_buffer("codes", class_codes(self.num_classes, bits, generator=generator))

    def task_head(self) -> nn.Linear:
        return self.base.get_submodule(self.task_head_name)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate features ``f(x)`` and the task head's logits."""
        tap = _Tap()
        handle = self.task_head().register_forward_pre_hook(tap)
        try:
            logits = self.base(x)
        finally:
            handle.remove()
        return tap.value, logits

    def forward(self, x):
        return self.base(x)

    def polarize(self, x: torch.Tensor) -> torch.Tensor:
        """The polarization head's outputs ``h(x)``, shape ``(B, bits)``."""
        f, _ = self.features_and_logits(x)
        return self.polar(f)

    def objective(self, x, y):
        f, logits = self.features_and_logits(x)
        ce = F.cross_entropy(logits, y)
        return ce + self.alpha * polarization_loss(self.polar(f), self.codes[y], margin=self.margin)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, by: str = "task") -> torch.Tensor:
        """Predicted classes: ``by="task"`` (the task head), ``"codes"`` (the nearest code to
        ``sign(h(x))`` in Hamming distance) or ``"both"`` (the mean of the task head's
        softmax and ``softmax(h(x) . t_c / sqrt(bits))`` over the classes ``c``)."""
        check_choice("by", by, PREDICT_BY)
        f, logits = self.features_and_logits(x)
        if by == "task":
            return logits.argmax(1)
        h = self.polar(f)
        if by == "codes":
            return hamming_predict(h, self.codes)
        agree = h @ self.codes.T / self.bits ** 0.5
        return (logits.softmax(1) + agree.softmax(1)).argmax(1)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, bits={self.bits}, margin={self.margin:g}"


@register_defense("spn")
class SPN(Defense):
    """The Secret Polarization Network: a secret polarization head and class codes, loss CE + alpha * L_pol (model-side).

    :meth:`wrap` adds to a classifier a bias-free head of ``bits`` outputs on its
    penultimate features and a code per class, both drawn from ``seed`` and kept
    secret (never released). The release is the gradient of ``CE + alpha * L_pol``
    with respect to the shared parameters. A static attacker matches cross-entropy
    gradients of the shared model; an adaptive one treats the head and the codes as
    unknowns (:mod:`leaklab.attacks.spn`).
    """

    acts_on = "model"
    keys = {"alpha": "weight of the polarization loss", "bits": "length d of the class codes",
            "margin": "margin m of the polarization hinge"}
    adaptive_note = ("optimises the dummy input together with a dummy secret head and relaxed codes "
                     "(leaklab.attacks.spn); in the games, simulates releases with its own draw of the head and codes")
    adaptive_attack = "spn_adaptive"     # what run_reconstruction(adaptive=True) runs against SPN

    def __init__(self, *, alpha: float = 1.0, bits: int = 64, margin: float = 1.0):
        self.alpha = _number("alpha", alpha)
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ValueError(f"bits must be an int >= 1, got {bits!r}")
        self.bits = bits
        self.margin = _number("margin", margin)

    def wrap(self, model: nn.Module, *, seed: int | None = None, share: bool = False) -> nn.Module:
        """``model`` with a secret polarization head and codes drawn from ``seed``.

        ``seed`` is the client's: the head and codes are drawn from a stream derived
        from it (:func:`secret_generator` with the role ``"client"``), so two seeds give
        two secrets and no adversary's draw (:meth:`adversary_view`) reproduces them.
        ``None`` draws a fresh secret from the operating system's entropy. The classifier
        is copied unless ``share`` (then the wrapper trains ``model``'s own parameters:
        several clients' wrappers can share one shared model, each with its own secret
        head and codes, see :meth:`clients`).
        """
        if isinstance(model, SPNModel):
            return model
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        gen = secret_generator("client", seed)
        base = model if share else copy.deepcopy(model)
        out = SPNModel(base, alpha=self.alpha, bits=self.bits, margin=self.margin, generator=gen)
        dev = next(model.parameters()).device
        return out.to(dev).train(model.training)

    def clients(self, model: nn.Module, n: int, *, seed: int = 0) -> list[SPNModel]:
        """``n`` clients' SPN models around one shared ``model``: each its own secret head and codes."""
        check_positive_int("n", n)
        gen = torch.Generator().manual_seed(seed)
        seeds = torch.randint(2**31 - 1, (n,), generator=gen).tolist()
        return [self.wrap(model, seed=s, share=True) for s in seeds]

    def client_secrets(self, model: nn.Module, n: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
        """``n`` clients' own heads ``polar.weight`` ``(n, bits, features)`` and codes ``(n, classes, bits)``."""
        model = model if isinstance(model, SPNModel) else self.wrap(model, seed=seed)
        own = self.clients(model.base, n, seed=seed)
        return {"polar.weight": torch.stack([c.polar.weight.detach() for c in own]),
                "codes": torch.stack([c.codes for c in own])}

    def adversary_view(self, model: nn.Module, *, seed: int, neutral: bool = False) -> SPNModel:
        """A frozen copy of the shared model with the adversary's own secret head and codes.

        The shared parameters are copied (they are what the server sees); the client's
        head and codes are not: the adversary draws its own from ``seed`` on a stream
        distinct from every client's (:func:`secret_generator` with the role
        ``"adversary"``), so no seed reproduces a client's draw. ``neutral`` gives a head
        and codes of zeros instead (what a static adversary, which simulates plain
        cross-entropy, holds: the polarization term then adds nothing to the gradient).
        ``seed`` is required: an adversary's draw is part of the game it plays.
        """
        if not isinstance(model, SPNModel):
            raise TypeError(f"model must be an SPN model (wrapped by the spn defense), got {type(model).__name__}")
        if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (the adversary's own draw), got {type(seed).__name__}")
        view = SPNModel(copy.deepcopy(model.base), alpha=model.alpha, bits=model.bits, margin=model.margin,
                        generator=secret_generator("adversary", seed))
        if neutral:
            with torch.no_grad():
                view.polar.weight.zero_()
                view.codes.zero_()
        view.requires_grad_(False)
        return view.to(next(model.parameters()).device).train(model.training)

    def apply(self, grads, generator):
        return grads
