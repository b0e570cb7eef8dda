"""Utility under a defense: federated training in which every client releases through the defense.

:func:`train_federated` splits a dataset i.i.d. among ``clients`` clients and runs
``rounds`` rounds of FedSGD or FedAvg. In every round each client computes its
release on the one release path (:func:`leaklab.release.release`, the defense ``M``
included: DP-SGD clips and noises each client's records, signSGD sends signs, ...)
and the server averages the releases:

* FedSGD: each client releases the defended gradient of a batch of
  ``batch_size`` records at the global model; the server steps by ``-lr`` times
  their mean.
* FedAvg: each client takes ``local_steps`` local SGD steps (each step's gradient
  defended) and releases ``theta_local - theta``; the server adds their mean.

With ``engine="batched"`` all clients are computed together: FedSGD in one vmapped
release of ``(clients, batch_size, ...)``, FedAvg with stacked per-client
parameters (``params_batched=True``). ``engine="loop"`` computes one client at a time
(the same draws; the benchmark's baseline and the oracle of the tests).

A model-side defense (VIB, SPN) changes the model itself (``defense.wrap``, which may
copy it: the trained model is :attr:`FederatedRun.model`). Secret parameters are never
released. Where the defense gives each client its own secret (SPN's head and codes,
:meth:`~leaklab.defenses.Defense.client_secrets`), each client keeps and trains its own;
the model returned carries client 0's. VIB's bottleneck weights are shared parameters.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ._checks import check_choice, check_positive_int
from .data import Dataset
from .defenses import as_defense
from .release import objective_of, release, shared_names
from .runtime import get_device

__all__ = ["FederatedRun", "train_federated", "PROTOCOLS"]

PROTOCOLS = ("fedsgd", "fedavg")


@dataclass
class FederatedRun:
    """Test accuracy after federated training under a defense, and how it was obtained."""

    accuracy: float
    history: list[tuple[int, float]]          # (round, test accuracy)
    config: dict
    epsilon: float | None = None              # DP-SGD: the privacy spent per client
    accountant: str | None = None
    wall_time: float = 0.0
    device: str = "cpu"
    params: dict = field(default_factory=dict, repr=False)
    #: the trained model: the one given, or, under a model-side defense, the wrapped model the
    #: clients trained (what an attack on the trained model must attack)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "history": [list(h) for h in self.history], "config": self.config,
                "epsilon": self.epsilon, "accountant": self.accountant, "wall_time": self.wall_time,
                "device": self.device}


def _accuracy(model: nn.Module, params, data: Dataset, dev, chunk: int = 2048) -> float:
    """Test accuracy at ``params``, with the model in evaluation mode (a stochastic model such as VIB
    predicts from its mean code, and draws nothing)."""
    correct = 0
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(data), chunk):
                out = functional_call(model, params, (data.x[s:s + chunk].to(dev),))
                correct += int((out.argmax(1).cpu() == data.y[s:s + chunk]).sum())
    finally:
        model.train(mode)
    return correct / max(len(data), 1)


def train_federated(model: nn.Module, data: Dataset, *, test: Dataset | None = None, clients: int = 8,
                    rounds: int = 20, protocol: str = "fedsgd", batch_size: int = 16, local_steps: int = 1,
                    lr: float = 0.1, defense=None, eval_every: int | None = None, engine: str = "batched",
                    delta: float = 1e-5, accountant: str = "rdp", seed: int = 0, device=None,
                    progress: bool = True) -> FederatedRun:
    """Train ``model`` (in place) by federated learning under ``defense``; the test accuracy it reaches.

    ``data`` is split i.i.d. into ``clients`` equal shards; ``test`` (default: none, the
    accuracy is then on ``data``, which says nothing about generalisation) is the
    held-out set. Every client samples ``batch_size`` records of its shard per
    (local) step, without replacement within the batch. For DP-SGD the epsilon of
    each client at ``delta`` comes from the Opacus ``accountant`` with sample rate
    ``batch_size / shard`` over the noisy steps a client takes: ``rounds`` for FedSGD (one
    release per round; ``local_steps`` is FedAvg's and FedSGD ignores it), ``rounds * local_steps``
    for FedAvg (the batches here have a fixed size, not Poisson sampling: the usual
    approximation when an accountant is applied to such training).
    """
    from ._progress import trange

    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a leaklab Dataset, got {type(data).__name__}")
    if test is not None and not isinstance(test, Dataset):
        raise TypeError(f"test must be a leaklab Dataset or None, got {type(test).__name__}")
    check_positive_int("clients", clients)
    check_positive_int("rounds", rounds)
    check_positive_int("batch_size", batch_size)
    check_positive_int("local_steps", local_steps)
    check_choice("protocol", protocol, PROTOCOLS)
    check_choice("engine", engine, ("batched", "loop"))
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    shard = len(data) // clients
    if shard < 1:
        raise ValueError(f"data holds {len(data)} records, fewer than clients={clients}")
    if batch_size > shard:
        raise ValueError(f"batch_size {batch_size} exceeds each client's {shard} records "
                         f"({len(data)} records among {clients} clients)")
    eval_every = rounds if eval_every is None else check_positive_int("eval_every", eval_every)
    defense = as_defense(defense)
    dev = get_device(device)
    model = defense.wrap(model.to(dev), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(len(data), generator=gen)[:shard * clients].reshape(clients, shard)
    x, y = data.x.to(dev), data.y.to(dev)
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    shared = set(shared_names(model))
    secret = [k for k in theta if k not in shared]
    # Each client's own secret state (SPN: its head and codes), stacked (clients, ...): it never
    # leaves the client and is trained by that client alone. Empty for a defense without one.
    mine = {k: v.to(dev) for k, v in defense.client_secrets(model, clients, seed=seed + 11).items()}
    if mine:
        theta = {k: v for k, v in theta.items() if k in shared}
    trained = list(theta) + [k for k in secret if k not in theta]     # what a local step updates
    loss = objective_of(model)
    history = []

    def batches():                                    # (clients, B) record indices, one batch per client
        pos = torch.argsort(torch.rand(clients, shard, generator=gen), 1)[:, :batch_size]
        return torch.gather(perm, 1, pos).to(dev)

    def step_grads(params, idx, batched: bool):
        """The defended releases (and secret parameters' own gradients) of each client's batch."""
        if engine == "batched":
            g = release(model, x[idx], y[idx], params=params, params_batched=batched, defense=defense,
                        generator=noise, check=False)
        else:
            parts = [release(model, x[idx[j:j + 1]], y[idx[j:j + 1]],
                             params={k: v[j:j + 1] for k, v in params.items()} if batched else params,
                             params_batched=batched, defense=defense, generator=noise, check=False)
                     for j in range(clients)]
            g = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if secret:
            own = vmap(grad(loss), in_dims=(0 if batched else None, 0, 0))(params, x[idx], y[idx])
            g.update({k: own[k] for k in secret})
        return g

    def per_client(params):
        return {**{k: v[None].expand(clients, *v.shape).clone() for k, v in params.items()}, **mine}

    for r in trange(rounds, desc="federated rounds", progress=progress, leave=False):
        if protocol == "fedsgd":
            if mine:
                g = step_grads(per_client(theta), batches(), True)
                mine.update({k: mine[k] - lr * g[k] for k in secret})
            else:
                g = step_grads(theta, batches(), False)
            theta = {k: theta[k] - lr * g[k].mean(0) for k in theta}
        else:
            cur = per_client(theta)
            for _ in range(local_steps):
                g = step_grads(cur, batches(), True)
                cur.update({k: cur[k] - lr * g[k] for k in trained})
            if mine:
                mine.update({k: cur[k] for k in secret})
            theta = {k: theta[k] + (cur[k] - theta[k]).mean(0) for k in theta}
        if not all(torch.isfinite(v).all() for v in theta.values()):
            raise ValueError(f"training diverged (non-finite parameters) in round {r + 1}; lower lr={lr}")
        if (r + 1) % eval_every == 0 or r + 1 == rounds:
            history.append((r + 1, _accuracy(model, {**dict(model.named_parameters()), **theta},
                                             test if test is not None else data, dev)))
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k in theta:
                p.copy_(theta[k])
            elif k in mine:
                p.copy_(mine[k][0])                   # the model keeps client 0's secret head
        if mine:
            for k, b in model.named_buffers():
                if k in mine:
                    b.copy_(mine[k][0])
    eps = acc_name = None
    if defense.name == "dp":
        acc_name = accountant
        noisy_steps = rounds * (local_steps if protocol == "fedavg" else 1)    # each client's noisy releases
        eps = float(defense.epsilon(delta=delta, sample_rate=batch_size / shard, steps=noisy_steps,
                                    accountant=accountant)) if defense.noise > 0 else math.inf
    config = {"clients": clients, "rounds": rounds, "protocol": protocol, "batch_size": batch_size,
              "local_steps": local_steps, "lr": lr, "defense": defense.config(), "engine": engine,
              "shard": shard, "delta": delta, "model": type(model).__name__}
    return FederatedRun(accuracy=history[-1][1], history=history, config=config, epsilon=eps,
                        accountant=acc_name, wall_time=time.perf_counter() - t0, device=str(dev),
                        params={k: v.detach().cpu() for k, v in theta.items()}, model=model)
