"""Checks for a model brought by the user, run before any work starts.

:func:`check_model` is called by every entry point that takes an ``nn.Module``
(:func:`leaklab.attacks.run_reconstruction`, :func:`leaklab.games.play`,
:func:`leaklab.attacks.reconstruct`). It does what a user would otherwise learn from
a deep torch error half-way through a run:

* layers whose output for one record depends on the other records of the batch
  (BatchNorm in training mode) or on chance (active dropout) are named with the fix,
  in the way Opacus's ``ModuleValidator`` lists the layers DP-SGD cannot handle;
* a dry forward pass on one record checks the input shape and the class count, and
  infers the class count when it is not given.

>>> from leaklab.models import build_model
>>> check_model(build_model("mlp", (10,), 3), (10,))
3
>>> from torch import nn
>>> check_model(nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)), (10,))
Traceback (most recent call last):
...
ValueError: model: BatchNorm1d layer '1' is in training mode, where each record's output depends on the other records of its batch (and torch.func cannot compute per-trial gradients through it); call model.eval() so that it uses its running statistics, or replace it with nn.GroupNorm (e.g. nn.GroupNorm(1, 8))
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_model", "model_problems"]


def _fix_norm(name: str, mod: nn.Module) -> str:
    channels = getattr(mod, "num_features", None)
    example = f" (e.g. nn.GroupNorm(1, {channels}))" if channels else ""
    return (f"{type(mod).__name__} layer '{name}' is in training mode, where each record's output depends "
            "on the other records of its batch (and torch.func cannot compute per-trial gradients through "
            "it); call model.eval() so that it uses its running statistics, or replace it with "
            f"nn.GroupNorm{example}")


def model_problems(model: nn.Module) -> list[str]:
    """Layers of ``model`` that the batched gradient code cannot handle as they are, each with its fix.

    BatchNorm in training mode (batch statistics couple the records of a batch) and
    dropout with ``p > 0`` in training mode (a random mask on every call: the release is
    not a function of the batch, and ``torch.func.vmap`` refuses random operations).
    Both are fine in evaluation mode (``model.eval()``).
    """
    problems = []
    for name, mod in model.named_modules():
        label = name or "(the model itself)"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            problems.append(_fix_norm(label, mod))
        elif isinstance(mod, nn.modules.instancenorm._InstanceNorm) and mod.training and mod.track_running_stats:
            problems.append(f"{type(mod).__name__} layer '{label}' tracks running statistics in training mode "
                            "(an in-place update torch.func cannot batch); call model.eval() or build it with "
                            "track_running_stats=False")
        elif isinstance(mod, nn.modules.dropout._DropoutNd) and mod.training and mod.p > 0:
            problems.append(f"{type(mod).__name__} layer '{label}' (p={mod.p:g}) is active in training mode: "
                            "every forward pass draws a new random mask, so the released gradient is not a "
                            "function of the batch and torch.func.vmap refuses it; call model.eval() (dropout "
                            "off) or remove the layer")
    return problems


def _shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of positive ints, got {input_shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    return shape


def check_model(model, input_shape, num_classes: int | None = None) -> int:
    """Check that ``model`` maps one record of ``input_shape`` to ``num_classes`` logits; return the class count.

    Raises ``TypeError`` when ``model`` is not an ``nn.Module`` and ``ValueError``, in one
    line, when it has layers the attacks and games cannot batch (see
    :func:`model_problems`), no trainable floating-point parameters, parameters other than
    float32 (call ``model.float()``), non-finite parameters, or when a dry forward pass on one record (zeros of shape
    ``(1, *input_shape)``, without gradients, on the model's device) fails or gives an
    output other than ``(1, num_classes)``. With ``num_classes=None`` the class count is
    read off that output.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _shape(input_shape)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    problems = model_problems(model)
    if problems:
        more = f" (and {len(problems) - 1} more layer(s) like it)" if len(problems) > 1 else ""
        raise ValueError(f"model: {problems[0]}{more}")
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True), so it releases no gradient")
    for k, p in params:
        if not p.is_floating_point():
            raise ValueError(f"model parameter {k!r} has dtype {p.dtype}; gradients need floating-point parameters")
        if not torch.isfinite(p).all():
            raise ValueError(f"model parameter {k!r} contains NaN or inf values")
    dtypes = {p.dtype for _, p in params}
    if dtypes != {torch.float32}:
        k, p = next((k, p) for k, p in params if p.dtype != torch.float32)
        raise ValueError(f"model parameter {k!r} has dtype {p.dtype}; leaklab computes in float32 (its data, "
                         "dummy inputs and defenses are float32): call model.float() before handing it over")
    devices = {p.device for _, p in params}
    if len(devices) > 1:
        raise ValueError(f"model parameters lie on several devices ({', '.join(sorted(map(str, devices)))}); "
                         "move the model to one with model.to(device)")
    dev, dtype = params[0][1].device, params[0][1].dtype
    x = torch.zeros((1, *shape), device=dev, dtype=dtype)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001  (any failure of the user's forward pass is a shape/model error)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model does not accept one record of input_shape {shape} (a batch of shape "
                         f"{(1, *shape)}): {type(exc).__name__}: {detail}") from None
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model must return a tensor of logits, got {type(out).__name__} for input_shape {shape}")
    if callable(getattr(model, "objective", None)):   # its own objective: the output need not be logits
        return int(num_classes) if num_classes is not None else int(out.shape[-1]) if out.ndim else 1
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"model maps a batch of shape {(1, *shape)} to shape {tuple(out.shape)}; expected "
                         f"(1, num_classes) logits (input_shape {shape})")
    k = int(out.shape[1])
    if num_classes is not None and k != num_classes:
        raise ValueError(f"model outputs {k} classes, the data have num_classes={num_classes} "
                         f"(input_shape {shape}); build the model's last layer with {num_classes} outputs")
    if k < 2:
        raise ValueError(f"model outputs {k} logit per record; leaklab needs class logits (num_classes >= 2) "
                         "for its cross-entropy objective")
    if not torch.isfinite(out).all():
        raise ValueError(f"model outputs NaN or inf for a record of zeros of input_shape {shape}")
    return k


# -- sizes against the data and the memory: checked once the players are set up, before any work ----

def _name(names, key: str) -> str:
    return (names or {}).get(key, key)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MB"


def _refuse_memory(need: int, budget: int, device, what: str, fits: list[str]) -> None:
    from ._memory import BUDGET_FRACTION

    fix = "; ".join(f for f in fits if f) or "nothing smaller fits either: use a smaller model or another device"
    raise ValueError(f"{what} needs about {_gb(need)} of memory, more than the {_gb(budget)} a run may use on "
                     f"{device} ({BUDGET_FRACTION:.0%} of the free memory); {fix}")


def check_game_sizes(game: str, pool, model: nn.Module, *, batch_size: int, trials: int, rounds: int = 1,
                     clients: int = 1, defense=None, adaptive: bool = False, adversary=None, device=None,
                     observe: str | None = None, secrets: int = 2, names: dict | None = None,
                     budget: int | None = None) -> None:
    """Refuse, in one line naming the largest size that fits, a game whose sizes do not fit the data or the memory.

    Called by the games once the players are set up (the challenger's ``pool``, the
    ``model``), before any training or release. Against the data: in the membership and
    tracing games a batch holds distinct records besides the target, so ``batch_size``
    must not exceed the pool, nor may the tracing game's ``clients``. Against the
    memory: the estimate of :func:`leaklab._memory.game_bytes` (and, for LiRA, of
    :func:`leaklab._memory.shadow_models_bytes`) must stay within
    :func:`leaklab._memory.budget_bytes` (half the free memory of ``device``; ``budget``
    overrides it). ``names`` maps an argument to the name the message should use (the
    command line's ``--batch-size``).
    """
    import math

    from ._memory import budget_bytes, game_bytes, largest_fitting, shadow_models_bytes

    n = len(pool)
    b, t, c = _name(names, "batch_size"), _name(names, "trials"), _name(names, "clients")
    if game in ("membership", "tracing") and observe != "model":
        if batch_size > n:
            raise ValueError(f"{b} {batch_size} is larger than the challenger's pool of {n} records (the data "
                             f"less the adversary's auxiliary share), from which each batch is drawn; use "
                             f"{b} {n} or less")
        if game == "tracing" and clients > n:
            raise ValueError(f"{c} {clients} is more than the challenger's pool of {n} records: the clients' "
                             f"batches would repeat the same records; use {c} {n} or fewer")
    if budget is None:
        budget = budget_bytes(device)
    if budget is None:
        return
    params = sum(p.numel() for p in model.parameters())
    numel = math.prod(pool.x.shape[1:])
    name = getattr(adversary, "name", adversary)
    per_sample = getattr(defense, "name", None) == "dp"
    sims = getattr(adversary, "sims", 0) if adaptive and name in ("informed", "combined") else 0
    opts = dict(record_numel=numel, params=params, rounds=rounds, clients=clients,
                secrets=max(secrets, 2),
                per_sample=per_sample, simulations=sims, shadow_trials=getattr(adversary, "shadow_trials", 0))
    if game == "membership" and observe == "model":
        shadows = getattr(adversary, "shadows", 0)
        if shadows:
            m = trials // 2
            need = shadow_models_bytes(shadows=shadows, params=params, candidates=2 * m, train_batch=32,
                                       record_numel=numel, classes=pool.num_classes)
            if need > budget:
                s = _name(names, "shadows")
                fit = largest_fitting(lambda v: shadow_models_bytes(
                    shadows=v, params=params, candidates=2 * m, train_batch=32, record_numel=numel,
                    classes=pool.num_classes), 2, shadows - 1, budget)
                _refuse_memory(need, budget, device, f"training {shadows} shadow models ({s} {shadows})",
                               [f"{s} {fit} fits" if fit else ""])
        return
    need = game_bytes(trials=trials, batch_size=batch_size, **opts)
    if need <= budget:
        return
    fits = []
    bt = largest_fitting(lambda v: game_bytes(trials=trials, batch_size=v, **opts), 1, batch_size - 1, budget)
    if bt is not None:
        fits.append(f"{b} {bt} fits with {t} {trials}")
    tt = largest_fitting(lambda v: game_bytes(trials=v, batch_size=batch_size, **opts), 2, trials - 1, budget)
    if tt is not None:
        fits.append(f"{t} {tt} fits with {b} {batch_size}")
    for key, lo in (("rounds", 1), ("shadow_trials", 10)):       # the other sizes the estimate counts
        if opts[key] > lo:
            v = largest_fitting(lambda v: game_bytes(trials=trials, batch_size=batch_size, **{**opts, key: v}),
                                lo, opts[key] - 1, budget)
            if v is not None:
                fits.insert(0, f"{_name(names, key)} {v} fits")
    what = f"{b} {batch_size} x {t} {trials}" + (f" x {c} {clients}" if clients > 1 else "") + \
        (f" x {_name(names, 'rounds')} {rounds}" if rounds > 1 else "") + \
        (f" with {opts['shadow_trials']} shadow trials" if opts["shadow_trials"] > 1000 else "")
    _refuse_memory(need, budget, device, what, fits)


def check_out_folder(path, flag: str = "out", *, create: bool = True):
    """The output folder ``path``, created if missing (with ``create``), after checking it can be written.

    Refused in one line naming ``flag`` and the fix: a file in the way (``path`` or one
    of its parents is a file), a missing parent folder (only the last part of the path
    is created, so that a typo does not create a tree of folders), no permission to write.
    """
    import os
    from pathlib import Path

    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{flag} must be a folder path, got {type(path).__name__}")
    text = str(path)
    if not text.strip():
        raise ValueError(f"{flag} must name a folder, got an empty string")
    p = Path(text).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            where = "" if parent == p else f" (in the way of {text})"
            raise ValueError(f"{flag} {text}: {parent} is a file, not a folder{where}; give a folder, e.g. "
                             f"{flag} {p.with_name(p.name + '_out') if parent == p else parent.parent / 'out'}")
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.exists():
            raise ValueError(f"{flag} {text}: the parent folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {text}: no permission to create a folder in {parent}; choose a folder "
                             "you can write to")
        if create:
            try:
                p.mkdir()
            except OSError as exc:
                raise ValueError(f"{flag} {text}: cannot create the folder ({exc.strerror or exc}); choose a "
                                 "folder you can write to") from None
        return p
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {text}: no permission to write in this folder; choose a folder you can write to")
    return p


def check_sweep_plan(out, records_file: str, *, points: int, seeds: int, attacks: int, settings: dict,
                     flag: str = "out", budget: int | None = None) -> None:
    """Refuse, before any training, a trade-off sweep that cannot run as asked.

    ``out`` must be a folder that can be written (:func:`check_out_folder`); a records
    file already there must hold sweeps run with the same ``settings`` (the sizes of a
    point: another profile's sweep is not resumed, and mixing them in one file mixes
    their curves); the sweep's bookkeeping (``points x seeds x attacks`` records,
    :func:`leaklab._memory.sweep_bytes`) must fit the memory, else the message names the
    largest ``seeds`` that fits.
    """
    import json
    from pathlib import Path

    from ._memory import budget_bytes, largest_fitting, sweep_bytes

    from .results import _jsonable

    folder = check_out_folder(out, flag)
    settings = json.loads(json.dumps(_jsonable(settings)))      # as the records hold them
    path = Path(folder) / records_file
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue                      # a torn line: the sweep's resume cuts it off
                there = rec.get("config", {}).get("settings") if isinstance(rec, dict) else None
                if rec.get("kind") != "tradeoff" or not isinstance(there, dict) or there == settings:
                    continue
                diff = [f"{k} {there.get(k)} there, {settings.get(k)} here" for k in sorted(set(there) | set(settings))
                        if there.get(k) != settings.get(k)]
                more = f"; {len(diff) - 3} more" if len(diff) > 3 else ""
                raise ValueError(f"{flag} {out} holds a trade-off sweep run with other settings "
                                 f"({'; '.join(diff[:3])}{more}), "
                                 "e.g. under another LEAKLAB_PROFILE; run with the same settings to resume it, or "
                                 f"give another {flag}")
    n = points * seeds * attacks
    if budget is None:
        budget = budget_bytes()
    if budget is not None and sweep_bytes(n) > budget:
        fit = largest_fitting(lambda s: sweep_bytes(points * s * attacks), 1, seeds, budget)
        how = f"seeds {fit} fits" if fit else "use fewer defense strengths"
        raise ValueError(f"{points} points x seeds {seeds} x {attacks} attack(s) make {n} records, whose "
                         f"bookkeeping needs about {_gb(sweep_bytes(n))}, more than the {_gb(budget)} a run may use; "
                         f"{how}")


def check_reconstruction_sizes(attack, model, input_shape, num_classes: int, *, trials: int, batch_size: int,
                               device=None, budget: int | None = None) -> None:
    """Refuse a reconstruction run whose memory estimate (:func:`leaklab._memory.reconstruction_bytes`) exceeds
    the budget, naming the largest ``trials`` (or, when one trial is too much, ``batch_size``) that fits.
    ``attack`` is the attack function, ``model`` a registered model's name or a module."""
    from ._memory import budget_bytes, largest_fitting, reconstruction_bytes

    if budget is None:
        budget = budget_bytes(device)
    if budget is None:
        return
    need = reconstruction_bytes(attack, model, input_shape, num_classes, trials, batch_size)
    if need <= budget:
        return
    t = largest_fitting(lambda v: reconstruction_bytes(attack, model, input_shape, num_classes, v, batch_size),
                        1, trials - 1, budget)
    b = None if t else largest_fitting(
        lambda v: reconstruction_bytes(attack, model, input_shape, num_classes, 1, v), 1, batch_size - 1, budget)
    fix = f"trials {t} fits" if t else f"trials 1 with batch_size {b} fits" if b else ""
    _refuse_memory(need, budget, device, f"trials {trials} x batch_size {batch_size} of {tuple(input_shape)} "
                   "inputs", [fix])
