"""What every defense is, the registry of defenses, and the ``NAME[:KEY=VALUE,...]`` spelling.

A defense ``M`` is a small object:

* ``name`` and its settings, returned by :meth:`Defense.config` (they go into every
  result record and its resume key);
* ``acts_on``: ``"sample"`` (it needs one gradient per record, ``(T, B, ...)``, as
  DP-SGD's clipping does), ``"batch"`` (it transforms the batch gradient
  ``(T, ...)``) or ``"model"`` (it changes the model and its objective, as VIB does,
  through :meth:`Defense.wrap`);
* :meth:`Defense.__call__` turns the gradients into the release, drawing any noise
  from the generator it is given;
* :meth:`Defense.simulate` is what an *adaptive* reconstruction attack passes its
  dummy gradient through: ``M`` itself where it is differentiable, or a documented
  differentiable surrogate of it (the mask of a pruned release, a smooth sign).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .._checks import Registry

__all__ = ["Defense", "NoDefense", "register_defense", "make_defense", "parse_defense", "as_defense",
           "list_defenses", "describe_defenses", "randn_like"]

Params = dict[str, torch.Tensor]


def randn_like(v: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``v``, drawn from ``generator`` (on its own device) and moved to ``v``'s."""
    if generator is None:
        return torch.randn_like(v)
    out = torch.randn(v.shape, generator=generator, device=generator.device, dtype=v.dtype)
    return out.to(v.device)


class Defense:
    """Base class. Subclasses set ``name``, ``acts_on``, ``keys`` (their settings) and ``apply``."""

    name: str = ""
    acts_on: str = "batch"
    #: the settings, in the order ``config()`` lists them, with a one-line meaning each
    keys: dict[str, str] = {}
    #: one line on what an adaptive adversary does against it
    adaptive_note: str = ""

    def config(self) -> dict:
        """The defense's name and settings: what a result record keeps."""
        return {"name": self.name, **{k: getattr(self, k) for k in self.keys}}

    def spec(self) -> str:
        """The ``NAME:KEY=VALUE,...`` spelling of this defense (what the CLI takes)."""
        kv = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in self.config().items() if k != "name" and v is not None)
        return f"{self.name}:{kv}" if kv else self.name

    def __call__(self, grads: Mapping[str, torch.Tensor], *, generator: torch.Generator | None = None) -> Params:
        """The release: the defense applied to ``grads`` (each with a leading trial dimension ``T``;
        ``(T, B, ...)`` per record when ``acts_on == "sample"``)."""
        if not isinstance(grads, Mapping) or not grads:
            raise TypeError(f"grads must be a non-empty dict of tensors, got {type(grads).__name__}")
        return self.apply(dict(grads), generator)

    def apply(self, grads: Params, generator: torch.Generator | None) -> Params:
        raise NotImplementedError

    def simulate(self, grads: Params, released: Params) -> Params:
        """A differentiable view of ``M`` for an adaptive attack on one problem.

        ``grads`` is the dummy input's gradient (no trial dimension; per record
        ``(B, ...)`` when ``acts_on == "sample"``), ``released`` the release being
        matched. The default is ``M`` without its noise, which suits defenses whose
        deterministic part is the identity.
        """
        if self.acts_on == "sample":
            return {k: v.mean(0) for k, v in grads.items()}
        return grads

    def public(self) -> Defense:
        """A copy of ``M`` as an adversary may know it: its settings, none of its fitted state.

        What a defense learns on the client's data (attributes ending in ``_``, such as
        perturb's surrogate classifier, fitted on the client's records) is the client's own;
        in the copy it is ``None``, and an adaptive adversary fits its own
        (:meth:`prepare`, where the defense has one) on its auxiliary data.
        """
        out = object.__new__(type(self))
        out.__dict__ = {k: None if (k.endswith("_") and not k.startswith("_")) else copy.deepcopy(v)
                        for k, v in vars(self).items()}
        return out

    def deterministic(self) -> Defense:
        """``M`` without its random part (the same defense for a deterministic one).

        An adaptive adversary uses it to estimate, noise-free, how the release's
        expectation moves with the secret.
        """
        return self

    def wrap(self, model: nn.Module, *, seed: int | None = None) -> nn.Module:
        """The model a client trains under this defense (the model itself unless the defense is model-side).

        ``seed`` seeds what a model-side defense draws for the client (SPN: its secret
        head and codes); the games pass their own seed.
        """
        return model

    def client_secrets(self, model: nn.Module, n: int, *, seed: int = 0) -> Params:
        """Each of ``n`` clients' own secret state for the wrapped ``model``, stacked ``(n, ...)``.

        The entries (secret parameters and buffers, under ``model``'s names) go into
        :func:`leaklab.release.release`'s ``params`` with ``params_batched=True`` so that
        every client releases through its own secret. Empty for a defense without one.
        """
        return {}

    def adversary_view(self, model: nn.Module, *, seed: int, neutral: bool = False) -> nn.Module:
        """The wrapped ``model`` as an adversary can simulate it: the same shared parameters,
        and the adversary's own draw (from ``seed``, required) of whatever the client keeps
        secret, or a neutral value of it (``neutral``, for a static adversary).

        An adaptive adversary knows ``M`` but not the client's secrets; simulating with
        the client's own would make it an oracle. The model itself for a defense without
        secrets (:func:`leaklab.games.protocol.adversary_model` copies it).
        """
        if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (the adversary's own draw), got {type(seed).__name__}")
        return model

    def __repr__(self) -> str:
        return f"Defense({self.spec()!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Defense) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.config().items())))


_DEFENSES: Registry = Registry("a defense", "defense")


def register_defense(name: str) -> Callable[[type[Defense]], type[Defense]]:
    """Class decorator: make a :class:`Defense` available as ``name`` (and in ``NAME:KEY=VALUE`` specs)."""
    return _DEFENSES.decorator(name, set_name=True)


def list_defenses() -> list[str]:
    """The names of the registered defenses."""
    return _DEFENSES.names()


def describe_defenses() -> list[dict]:
    """One dict per defense: name, where it acts, its keys with their meaning, the adaptive adversary."""
    out = []
    for name in list_defenses():
        cls = _DEFENSES[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "acts_on": cls.acts_on, "keys": dict(cls.keys),
                    "summary": doc[0] if doc else "", "adaptive": cls.adaptive_note})
    return out


def _keys_line() -> str:
    return "; ".join(f"{n}({', '.join(_DEFENSES[n].keys)})" if _DEFENSES[n].keys else n for n in list_defenses())


def make_defense(name: str | Defense | None, **settings) -> Defense:
    """The defense registered as ``name`` with ``settings`` (``None`` or ``"none"``: no defense)."""
    if isinstance(name, Defense):
        if settings:
            raise ValueError("settings can only be given with a defense name, not with a Defense object")
        return name
    if name is None:
        name = "none"
    if not isinstance(name, str):
        raise TypeError(f"defense must be a name, a Defense or None, got {type(name).__name__}")
    if name not in _DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose from: {_keys_line()}")
    cls = _DEFENSES[name]
    unknown = [k for k in settings if k not in cls.keys]
    if unknown:
        keys = ", ".join(cls.keys) or "no settings"
        raise ValueError(f"defense {name!r} has no setting {unknown[0]!r}; its keys: {keys}")
    return cls(**settings)


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        v = int(text)
        return v
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return text.strip()
    if not math.isfinite(v):
        raise ValueError(f"defense settings must be finite numbers, got {text!r}")
    return v


def parse_defense(spec: str) -> Defense:
    """A defense from its spelling ``NAME[:KEY=VALUE,...]``, e.g. ``"dp:clip=1,noise=2"`` or ``"sign"``.

    >>> parse_defense("prune:ratio=0.9").config()
    {'name': 'prune', 'ratio': 0.9}
    """
    if isinstance(spec, Defense):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a defense spec must be NAME[:KEY=VALUE,...], got {spec!r}; defenses: {_keys_line()}")
    name, colon, rest = spec.strip().partition(":")
    if colon and not rest.strip():
        raise ValueError(f"defense spec {spec!r} has a ':' but no settings after it; write {name.strip()!r} "
                         f"alone or NAME:KEY=VALUE,...; defenses: {_keys_line()}")
    settings = {}
    for part in (p.strip() for p in rest.split(",")) if colon else ():
        key, eq, val = part.partition("=")
        if not part or not eq or not key.strip() or not val.strip():
            raise ValueError(f"defense setting {part!r} in {spec!r} must read KEY=VALUE (no empty items); "
                             f"defenses: {_keys_line()}")
        if key.strip() in settings:
            raise ValueError(f"defense setting {key.strip()!r} is given twice in {spec!r}; give each key once")
        settings[key.strip()] = _value(val)
    return make_defense(name.strip(), **settings)


def as_defense(defense) -> Defense:
    """``None`` (no defense), a spec string or a :class:`Defense` as a :class:`Defense`."""
    if defense is None:
        return NoDefense()
    if isinstance(defense, Defense):
        return defense
    if isinstance(defense, str):
        return parse_defense(defense)
    raise TypeError(f"defense must be a Defense, a spec such as 'dp:clip=1,noise=2', or None, "
                    f"got {type(defense).__name__}")


@register_defense("none")
class NoDefense(Defense):
    """No defense: the release is the gradient itself (``M`` is the identity)."""

    acts_on = "batch"
    adaptive_note = "nothing to adapt to"

    def apply(self, grads, generator):
        return grads
