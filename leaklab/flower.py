"""Audit a Flower federation: record what its server sees, attack it, defend its clients.

An adapter at the boundary between `Flower <https://flower.ai>`_ (``flwr``, the
Message API of version 1.42: ``flwr.serverapp.strategy``, ``ServerApp``,
``ClientApp`` and client mods) and leaklab's own vocabulary. It needs the optional
extra ``pip install "leaklab[flower]"``; ``import leaklab`` never imports ``flwr``.

* :class:`RecordingStrategy` wraps any Flower strategy, as Flower's own DP wrappers
  do, and keeps per round the global parameters it sent, every client's returned
  arrays, example count, node id and training config, as parameter dicts named like
  the model's ``named_parameters()``. It hands the replies on unchanged: what the
  wrapped strategy aggregates is what it would aggregate alone.
* :meth:`ClientUpdate.release` turns one recorded update into a leaklab release: the
  gradient itself when the client sent one (FedSGD), else the FedAvg pseudo-gradient
  ``(theta - theta_client) / (lr * steps)``, beside the model at the round's
  parameters, so that :func:`leaklab.attacks.reconstruct` and the registered attacks
  take it unchanged. With one local step on one batch the pseudo-gradient *is* that
  batch's gradient.
* :meth:`RoundRecord.secure_view` is what a server running secure aggregation sees: the
  sum of the releases and nothing else (:class:`SecureAggregate`).
* :func:`client_app` builds a Flower ``ClientApp`` of leaklab clients, whose updates are
  computed on leaklab's release path (:func:`leaklab.release.release`, the defense
  included); :class:`DefenseMod` is the client mod that puts a leaklab defense on such
  a client and reports DP-SGD's epsilon from the accountant for the client's own
  sampling rate and step count.
* :func:`run_inline` runs a ``ServerApp`` with a ``ClientApp`` in this process, one
  client call after another (no Ray); :func:`run_flower_simulation` runs the same pair on
  Flower's own simulation engine (``flwr.simulation.run_simulation``, Ray) and shuts
  Ray down afterwards.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
import uuid
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

#: The Flower releases this module is written against (the Message API of 1.42).
SUPPORTED_FLWR = ">=1.42,<1.43"
_SUPPORTED = (1, 42)
_INSTALL = 'pip install "leaklab[flower]"'


def _flwr_version(flwr) -> str:
    v = getattr(flwr, "__version__", None)
    if v is None:
        from importlib.metadata import version

        v = version("flwr")
    return str(v)


def require_flwr():
    """The ``flwr`` package, checked to be a supported version; a one-line ImportError otherwise."""
    try:
        import flwr
    except ImportError:
        raise ImportError(f"leaklab.flower needs Flower (flwr{SUPPORTED_FLWR}), which is not installed; "
                          f"install it with: {_INSTALL}") from None
    v = _flwr_version(flwr)
    try:
        major_minor = tuple(int(p) for p in v.split(".")[:2])
    except ValueError:
        major_minor = None
    if major_minor != _SUPPORTED:
        raise ImportError(f"leaklab.flower supports flwr{SUPPORTED_FLWR}, found flwr {v}; install a supported "
                          f"version with: {_INSTALL}")
    return flwr


_flwr = require_flwr()
FLWR_VERSION = _flwr_version(_flwr)
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")   # never install into an env

from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MessageType,  # noqa: E402
                      MetricRecord, RecordDict)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg, Strategy  # noqa: E402

from ._checks import check_choice, check_positive_int  # noqa: E402
from .data import Dataset  # noqa: E402
from .defenses import DPSGD, as_defense  # noqa: E402

__all__ = ["SUPPORTED_FLWR", "FLWR_VERSION", "require_flwr", "to_params", "to_arrays", "LazyParams", "ClientUpdate",
           "FlowerRelease", "RoundRecord", "SecureAggregate", "RecordingStrategy", "FedSGD", "client_app",
           "DefenseMod", "FlowerRun", "batch_indices", "split", "simulate", "run_inline", "run_flower_simulation", "quiet_flower", "LEAKLAB_RECORD"]

Params = dict[str, torch.Tensor]

#: The ConfigRecord a leaklab client adds to its reply: how it computed its update
#: (``release``: ``"gradient"`` or ``"parameters"``, ``lr``, ``local-steps``, ``batch-size``,
#: ``partition-id``, and under a defense ``defense``, ``epsilon``, ``delta``, ``sample-rate``, ``steps``).
LEAKLAB_RECORD = "leaklab"
#: Config keys read for a client's training settings (the train config, or the reply's ``leaklab`` record).
KEY_LR, KEY_STEPS, KEY_BATCH = "lr", "local-steps", "batch-size"
_DEFENSE_STATE = "leaklab.defense"
_PRIVACY_STATE = "leaklab.privacy"


# -- arrays <-> leaklab parameter dicts -------------------------------------------------------------

def to_params(model: nn.Module, arrays) -> Params:
    """The parameters in ``arrays`` (an ``ArrayRecord`` or a dict of tensors) named like ``model.named_parameters()``.

    Accepts the keys of ``named_parameters()``, of ``state_dict()`` (buffers are dropped), or
    Flower's numbered keys ``"0", "1", ...`` in the order of ``state_dict()`` or of
    ``parameters()``. Each tensor is a float copy on the model's device, shaped like its parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(arrays, ArrayRecord):
        arrays = arrays.to_torch_state_dict()
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a flwr ArrayRecord or a dict of tensors, got {type(arrays).__name__}")
    named = dict(model.named_parameters())
    keys = list(arrays)
    if set(named) <= set(keys):
        picked = {k: arrays[k] for k in named}
    else:
        state = list(model.state_dict())
        numbered = [str(i) for i in range(len(keys))]
        if keys == numbered and len(keys) == len(state):
            by_name = dict(zip(state, (arrays[k] for k in keys)))
            picked = {k: by_name[k] for k in named}
        elif keys == numbered and len(keys) == len(named):
            picked = dict(zip(named, (arrays[k] for k in keys)))
        else:
            missing = sorted(set(named) - set(keys))
            raise ValueError(f"arrays do not match the model's parameters: missing {missing[:5]} "
                             f"(arrays hold {keys[:5]}{'...' if len(keys) > 5 else ''})")
    dev = next(iter(named.values())).device
    out = {}
    for k, p in named.items():
        v = torch.as_tensor(picked[k])
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"arrays[{k!r}] has shape {tuple(v.shape)}, the model's parameter {tuple(p.shape)}")
        out[k] = v.detach().to(device=dev, dtype=p.dtype).clone()
    return out


def to_arrays(params) -> ArrayRecord:
    """An ``ArrayRecord`` of a parameter dict (or of a model's parameters), keyed by parameter name."""
    if isinstance(params, nn.Module):
        params = dict(params.named_parameters())
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in params.items()})


class LazyParams(Mapping):
    """A parameter dict read from an ``ArrayRecord`` on first use (:func:`to_params`), a snapshot of it.

    Recording keeps the record's arrays (immutable serialised bytes) and converts them
    only when an update is looked at, so that recording a round costs next to nothing.
    """

    def __init__(self, model: nn.Module, arrays: ArrayRecord):
        self._model = model
        self._arrays = ArrayRecord(dict(arrays.items()))     # the Arrays as they are now
        self._params: Params | None = None

    def _get(self) -> Params:
        if self._params is None:
            self._params = to_params(self._model, self._arrays)
            self._arrays = None
        return self._params

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"LazyParams({list(self)})"


def _load(model: nn.Module, params: Mapping[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    return model


# -- what the server recorded -----------------------------------------------------------------------

@dataclass
class FlowerRelease:
    """A recorded Flower update as a leaklab release: ``grads`` at ``params`` on ``model``.

    ``model`` is a copy holding the round's global parameters (what the server sent);
    ``grads`` maps each parameter name to the released gradient (no trial dimension);
    ``batch_size`` is the number of records behind it; ``exact`` says whether ``grads``
    is a gradient of the batch (FedSGD, or FedAvg with one local step) rather than a
    multi-step pseudo-gradient.
    """

    model: nn.Module
    params: Params
    grads: Params
    batch_size: int
    kind: str
    exact: bool
    round: int
    node_id: int

    def reconstruct(self, *, input_shape, attack: str = "analytic", **options):
        """Run a registered attack on this release (:func:`leaklab.attacks.reconstruct`)."""
        from .attacks import reconstruct

        options.setdefault("batch_size", self.batch_size)
        options.setdefault("progress", False)
        return reconstruct(self.model, self.grads, input_shape=input_shape, attack=attack, **options)


@dataclass
class ClientUpdate:
    """One client's reply in one round, as the server received it.

    ``returned`` is what the client sent (its parameters, or its gradient when ``kind``
    is ``"gradient"``); ``config`` the client's training settings (``lr``,
    ``local-steps``, ``batch-size``) and what its ``leaklab`` record said (``defense``,
    ``epsilon``, ...).
    """

    round: int
    node_id: int
    sent: Params = field(repr=False)
    returned: Params = field(repr=False)
    num_examples: int
    config: dict
    kind: str = "parameters"

    def gradient(self) -> Params:
        """The FedSGD gradient, or the FedAvg pseudo-gradient ``(theta - theta_client) / (lr * steps)``."""
        if self.kind == "gradient":
            return {k: v.clone() for k, v in self.returned.items()}
        lr, steps = self.config.get(KEY_LR), self.config.get(KEY_STEPS, 1)
        if lr is None:
            raise ValueError(f"the update of node {self.node_id} in round {self.round} holds parameters but no "
                             f"learning rate: send {KEY_LR!r} in the train config (or the reply's "
                             f"{LEAKLAB_RECORD!r} record) to turn it into a pseudo-gradient")
        scale = float(lr) * int(steps)
        return {k: (self.sent[k] - self.returned[k]) / scale for k in self.sent}

    def release(self, model: nn.Module) -> FlowerRelease:
        """This update as a release on a copy of ``model`` holding the round's global parameters."""
        m = _load(copy.deepcopy(model), self.sent)
        steps = int(self.config.get(KEY_STEPS, 1))
        b = self.config.get(KEY_BATCH)
        batch = int(b) if b is not None else int(self.num_examples)
        return FlowerRelease(model=m, params={k: v.clone() for k, v in self.sent.items()}, grads=self.gradient(),
                             batch_size=batch, kind=self.kind, exact=self.kind == "gradient" or steps == 1,
                             round=self.round, node_id=self.node_id)


@dataclass
class SecureAggregate:
    """What a server under secure aggregation learns in one round: the sum of the clients' releases.

    ``total`` is the sum of the clients' (pseudo-)gradients and ``batch_size`` the number
    of records behind it. An attack on it can only treat it as one release of the union
    of the clients' batches: it cannot say which client a record came from, and for a
    batch of more than one record the analytic attack recovers only the records that a
    hidden unit sees alone (``info["recovered"]``), the rest blended (chapter 6).
    """

    round: int
    clients: int
    total: Params = field(repr=False)
    batch_size: int
    params: Params = field(repr=False)

    def release(self, model: nn.Module) -> FlowerRelease:
        m = _load(copy.deepcopy(model), self.params)
        return FlowerRelease(model=m, params={k: v.clone() for k, v in self.params.items()},
                             grads={k: v.clone() for k, v in self.total.items()}, batch_size=self.batch_size,
                             kind="sum", exact=False, round=self.round, node_id=-1)

    def reconstruct(self, model: nn.Module, *, input_shape, attack: str = "analytic", **options):
        """The attack on the sum as one release of ``batch_size`` records of unknown clients."""
        return self.release(model).reconstruct(input_shape=input_shape, attack=attack, **options)


@dataclass
class RoundRecord:
    """One round as the server saw it: the parameters sent, the replies, what the strategy aggregated."""

    round: int
    sent: Params = field(repr=False)
    config: dict = field(default_factory=dict)
    updates: list[ClientUpdate] = field(default_factory=list)
    aggregate: Params | None = field(default=None, repr=False)
    secure: bool = False

    def secure_view(self) -> SecureAggregate:
        """The sum of the clients' releases: all that secure aggregation shows the server."""
        if not self.updates and self.secure and self._sum is not None:
            total, batch, n = self._sum
        else:
            grads = [u.gradient() for u in self.updates]
            if not grads:
                raise ValueError(f"round {self.round} has no client update to sum")
            total = {k: sum(g[k] for g in grads) for k in grads[0]}
            batch = sum(int(u.config.get(KEY_BATCH, u.num_examples)) for u in self.updates)
            n = len(self.updates)
        return SecureAggregate(round=self.round, clients=n, total=total, batch_size=batch, params=self.sent)

    _sum: tuple | None = field(default=None, repr=False)


def _config_dict(record) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in record.items()} if record is not None else {}


class RecordingStrategy(Strategy):
    """Wrap any Flower strategy and keep what its server sees, round by round.

    ``strategy`` does all the work (sampling, aggregation, evaluation); this wrapper only
    reads the messages it sends and the replies it gets, and passes them on as they
    are. ``model`` names the arrays (see :func:`to_params`). ``secure=True`` keeps only
    what a server under secure aggregation would learn (the sum of the releases, see
    :meth:`RoundRecord.secure_view`); per-client updates are then not kept.

    ``rounds`` maps each round number to its :class:`RoundRecord`.
    """

    def __init__(self, strategy: Strategy, *, model: nn.Module, secure: bool = False):
        super().__init__()
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a flwr.serverapp.strategy.Strategy, got {type(strategy).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.strategy = strategy
        self.model = model
        self.secure = bool(secure)
        self.rounds: dict[int, RoundRecord] = {}
        #: wall time spent recording (reading and converting the messages), the wrapped strategy's excluded
        self.recording_seconds = 0.0
        self._sent_config: dict[int, dict[int, dict]] = {}

    def __repr__(self) -> str:
        return f"RecordingStrategy({self.strategy!r})"

    # -- what the server sends ------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        t0 = time.perf_counter()
        self.rounds[server_round] = RoundRecord(round=server_round, sent=LazyParams(self.model, arrays),
                                                config=_config_dict(config), secure=self.secure)
        per_node = {}
        for m in messages:
            cfg = {}
            for rec in m.content.config_records.values():
                cfg.update(_config_dict(rec))
            per_node[m.metadata.dst_node_id] = cfg
        self._sent_config[server_round] = per_node
        self.recording_seconds += time.perf_counter() - t0
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)                 # materialised once: the wrapped strategy reads the same list
        t0 = time.perf_counter()
        rec = self.rounds.get(server_round)
        if rec is not None:
            self._record(rec, replies)
        t1 = time.perf_counter()
        agg_arrays, agg_metrics = self.strategy.aggregate_train(server_round, replies)
        t2 = time.perf_counter()
        if rec is not None and agg_arrays is not None:
            rec.aggregate = LazyParams(self.model, agg_arrays)
        self.recording_seconds += (t1 - t0) + (time.perf_counter() - t2)
        return agg_arrays, agg_metrics

    def _record(self, rec: RoundRecord, replies: list[Message]) -> None:
        weight_key = getattr(self.strategy, "weighted_by_key", "num-examples")
        sent_cfg = self._sent_config.pop(rec.round, {})
        updates = []
        for msg in replies:
            if msg.has_error() or len(msg.content.array_records) != 1:
                continue
            node = int(msg.metadata.src_node_id)
            arrays = next(iter(msg.content.array_records.values()))
            metrics = {}
            for m in msg.content.metric_records.values():
                metrics.update(_config_dict(m))
            mine = _config_dict(msg.content.config_records.get(LEAKLAB_RECORD)) \
                if LEAKLAB_RECORD in msg.content.config_records else {}
            cfg = {**sent_cfg.get(node, rec.config), **{k: metrics[k] for k in (KEY_LR, KEY_STEPS, KEY_BATCH)
                                                         if k in metrics}, **mine}
            kind = "gradient" if cfg.get("release") == "gradient" else "parameters"
            n = metrics.get(weight_key, cfg.get(KEY_BATCH, 0))
            updates.append(ClientUpdate(round=rec.round, node_id=node, sent=rec.sent,
                                        returned=LazyParams(self.model, arrays), num_examples=int(n),
                                        config=cfg, kind=kind))
        if self.secure:
            view = RoundRecord(round=rec.round, sent=rec.sent, updates=updates).secure_view()
            rec._sum = (view.total, view.batch_size, view.clients)
        else:
            rec.updates = updates

    # -- everything else is the wrapped strategy's ----------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def updates(self) -> list[ClientUpdate]:
        """Every recorded client update, round by round."""
        if self.secure:
            raise ValueError("under secure aggregation the server sees only the sum of the updates; "
                             "use rounds[r].secure_view()")
        return [u for r in sorted(self.rounds) for u in self.rounds[r].updates]


class FedSGD(FedAvg):
    """FedSGD as a Flower strategy: clients send gradients, the server steps by ``-lr`` times their mean.

    The weighted mean of the replies is FedAvg's (by ``num-examples``); the step is taken
    from the parameters this strategy sent. ``lr`` is sent to the clients in the train
    config as well, so that a recorder reads it.
    """

    def __init__(self, *, lr: float, **kwargs):
        super().__init__(**kwargs)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)
        self._current: ArrayRecord | None = None

    def configure_train(self, server_round, arrays, config, grid):
        self._current = arrays
        config[KEY_LR] = self.lr
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        mean, metrics = super().aggregate_train(server_round, replies)
        if mean is None or self._current is None:
            return mean, metrics
        theta = self._current.to_torch_state_dict()
        g = mean.to_torch_state_dict()
        return ArrayRecord({k: theta[k] - self.lr * g[k] if k in g else theta[k] for k in theta}), metrics


# -- the client side ---------------------------------------------------------------------------------

def batch_indices(n: int, batch_size: int, *, seed: int, partition: int, server_round: int) -> torch.Tensor:
    """The records a leaklab client trains on in a round: ``batch_size`` of its ``n``, without replacement.

    A pure function of ``(seed, partition, server_round)``, so that an experiment that knows
    the seed can score a reconstruction against the records really used.
    """
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(partition) * 7919 + int(server_round))
    return torch.randperm(n, generator=gen)[:min(batch_size, n)]


def _privacy(defense, delta: float, sample_rate: float, steps: int) -> dict:
    if not isinstance(defense, DPSGD):
        return {}
    eps = defense.epsilon(delta=delta, sample_rate=sample_rate, steps=steps)
    return {"epsilon": float(eps), "delta": float(delta),
            "sample-rate": float(sample_rate), "steps": int(steps)}


def client_app(model: nn.Module, partitions: Sequence[Dataset], *, protocol: str = "fedsgd", lr: float = 0.1,
               local_steps: int = 1, batch_size: int = 1, seed: int = 0, mods: Sequence = ()) -> ClientApp:
    """A Flower ``ClientApp`` whose node ``i`` holds ``partitions[i]`` and trains ``model`` on leaklab's release path.

    Each train message carries the global arrays; the client draws its batch
    (:func:`batch_indices`) and releases, through :func:`leaklab.release.release` and the
    defense that a :class:`DefenseMod` in ``mods`` puts on it:

    * ``protocol="fedsgd"``: the gradient of one batch (arrays named like the
      parameters, ``release="gradient"`` in its ``leaklab`` record);
    * ``protocol="fedavg"``: its parameters after ``local-steps`` SGD steps of size ``lr``
      on batches of ``batch-size`` (each step defended, local DP-SGD under ``dp``).

    ``lr``, ``local-steps`` and ``batch-size`` in the train config override the defaults
    given here. The node's partition is ``node_config["partition-id"]`` (set by Flower's
    simulation and by :func:`run_inline`).
    """
    from .fl import fedavg_update, loss_gradient

    check_choice("protocol", protocol, ("fedsgd", "fedavg"))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not partitions or not all(isinstance(p, Dataset) for p in partitions):
        raise TypeError("partitions must be a non-empty sequence of leaklab Datasets, one per node")
    check_positive_int("local_steps", local_steps)
    check_positive_int("batch_size", batch_size)
    app = ClientApp(mods=list(mods))
    model = copy.deepcopy(model)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        part = int(context.node_config.get("partition-id", 0))
        data = partitions[part]
        cfg = {}
        for rec in msg.content.config_records.values():
            cfg.update(_config_dict(rec))
        step = float(cfg.get(KEY_LR, lr))
        steps = int(cfg.get(KEY_STEPS, local_steps)) if protocol == "fedavg" else 1
        b = min(int(cfg.get(KEY_BATCH, batch_size)), len(data))
        rnd = int(cfg.get("server-round", 0))
        spec = context.state[_DEFENSE_STATE]["spec"] if _DEFENSE_STATE in context.state else None
        defense = as_defense(spec)
        params = to_params(model, next(iter(msg.content.array_records.values())))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + part * 7919 + rnd + 104_729)
        if protocol == "fedsgd":
            idx = batch_indices(len(data), b, seed=seed, partition=part, server_round=rnd)
            x, y = data.x[idx], data.y[idx]
            out = loss_gradient(model, x, y, params=params, defense=defense, generator=gen)
            n = len(idx)
        else:
            idx = batch_indices(len(data), b * steps, seed=seed, partition=part, server_round=rnd)
            x, y = data.x[idx], data.y[idx]
            upd = fedavg_update(model, x, y, local_steps=steps, lr=step, local_batch_size=b, params=params,
                                defense=defense, generator=gen)
            out = {k: params[k] + upd[k] for k in params}
            n = len(idx)
        info = {"release": "gradient" if protocol == "fedsgd" else "parameters", KEY_LR: step,
                KEY_STEPS: steps, KEY_BATCH: b, "partition-id": part, "records-held": len(data),
                "defense": defense.spec()}
        return Message(RecordDict({"arrays": to_arrays(out), "metrics": MetricRecord({"num-examples": n}),
                                   LEAKLAB_RECORD: ConfigRecord(info)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from .fl import accuracy

        part = int(context.node_config.get("partition-id", 0))
        m = _load(copy.deepcopy(model), to_params(model, next(iter(msg.content.array_records.values()))))
        acc = accuracy(m, partitions[part])
        return Message(RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": len(partitions[part])})}),
                       reply_to=msg)

    return app


class DefenseMod:
    """A Flower client mod that puts a leaklab defense on the client: ``ClientApp(mods=[DefenseMod("dp:clip=1,noise=1")])``.

    On a train message it hands the defense to a leaklab client (:func:`client_app`),
    which computes every release on :func:`leaklab.release.release` with it (DP-SGD
    clips each record's gradient, which only the client's own training loop sees). On
    the reply it checks that the defense was applied and, for DP-SGD, adds the epsilon
    that leaklab's accountant (:meth:`leaklab.defenses.DPSGD.epsilon`, Opacus's RDP) gives
    for the client's real sampling rate (``batch-size / records held``) and the noisy
    steps it has taken over all its rounds so far, at ``delta``.

    A client that does not run on leaklab's release path gets a batch-level defense
    (``prune``, ``sign``, ``noise``) applied by the mod to its pseudo-gradient
    ``(theta - theta_client) / (lr * steps)`` (the defense step of the release path),
    returning ``theta - lr * steps * M(g)``; a per-record defense (``dp``) is refused
    with an error reply, since it cannot be applied after the fact.
    """

    def __init__(self, defense, *, delta: float = 1e-5):
        self.defense = as_defense(defense)
        if self.defense.acts_on == "model":
            raise ValueError(f"defense {self.defense.name!r} changes the model; build the client's model with "
                             "defense.wrap(model) instead of a mod")
        if not (isinstance(delta, float) and 0 < delta < 1):
            raise ValueError(f"delta must be a float in (0, 1), got {delta!r}")
        self.delta = delta

    def __call__(self, msg: Message, ctxt: Context, call_next) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        spec = self.defense.spec()
        ctxt.state[_DEFENSE_STATE] = ConfigRecord({"spec": spec})
        try:
            out = call_next(msg, ctxt)
        finally:
            del ctxt.state[_DEFENSE_STATE]
        if out.has_error():
            return out
        mine = out.content.config_records.get(LEAKLAB_RECORD)
        if mine is not None and mine.get("defense") == spec:
            info = _config_dict(mine)
        else:
            out, info = self._apply_after(msg, out)
            if info is None:
                return out
        n_held = info.get("records-held")
        b = int(info.get(KEY_BATCH, 1))
        part_size = int(n_held) if n_held is not None else self._held(ctxt, b)
        prev = ctxt.state[_PRIVACY_STATE]["steps"] if _PRIVACY_STATE in ctxt.state else 0
        steps = int(prev) + int(info.get(KEY_STEPS, 1))
        ctxt.state[_PRIVACY_STATE] = ConfigRecord({"steps": steps})
        info.update(_privacy(self.defense, self.delta, min(1.0, b / max(part_size, 1)), steps))
        out.content[LEAKLAB_RECORD] = ConfigRecord(info)
        return out

    @staticmethod
    def _held(ctxt: Context, b: int) -> int:
        n = ctxt.node_config.get("records-held")
        return int(n) if n is not None else b

    def _apply_after(self, msg: Message, out: Message):
        from flwr.app import Error

        if self.defense.acts_on == "sample":
            return Message(Error(code=0, reason=f"defense {self.defense.name!r} clips each record's gradient and "
                                                "must run inside the client's training: use leaklab.flower."
                                                "client_app"), reply_to=msg), None
        cfg = {}
        for rec in msg.content.config_records.values():
            cfg.update(_config_dict(rec))
        if KEY_LR not in cfg:
            return Message(Error(code=0, reason=f"DefenseMod needs {KEY_LR!r} in the train config to defend a "
                                                "client's pseudo-gradient"), reply_to=msg), None
        scale = float(cfg[KEY_LR]) * int(cfg.get(KEY_STEPS, 1))
        sent = next(iter(msg.content.array_records.values())).to_torch_state_dict()
        key, rec = next(iter(out.content.array_records.items()))
        got = rec.to_torch_state_dict()
        g = {k: ((sent[k] - got[k]) / scale)[None] for k in got}
        released = self.defense(g)
        out.content[key] = ArrayRecord({k: sent[k] - scale * released[k][0] for k in got})
        info = {"release": "parameters", KEY_LR: float(cfg[KEY_LR]), KEY_STEPS: int(cfg.get(KEY_STEPS, 1)),
                KEY_BATCH: int(cfg.get(KEY_BATCH, 1)), "defense": self.defense.spec()}
        return out, info


# -- running a ServerApp with a ClientApp ------------------------------------------------------------

@contextmanager
def quiet_flower(level: int = logging.WARNING):
    """Flower's log (its ``flwr`` logger) at ``level`` or above only, inside the block."""
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


class _InlineGrid(Grid):
    """A Grid that delivers every message to the ClientApp in this process, one after another."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run, node_config: Callable[[int], dict]):
        self._app = client_app
        self._run = run
        self._ids = [1000 + i for i in range(num_nodes)]
        self._contexts = {nid: Context(run_id=run.run_id, node_id=nid, node_config=node_config(i),
                                       state=RecordDict(), run_config={})
                          for i, nid in enumerate(self._ids)}
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return list(self._ids)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = mid
            # the client gets its own copy of the content, as it would after transport
            delivered = Message(copy.deepcopy(msg.content), dst_node_id=msg.metadata.dst_node_id,
                                message_type=msg.metadata.message_type, group_id=msg.metadata.group_id)
            delivered.metadata.__dict__["_message_id"] = mid
            reply = self._app(delivered, self._contexts[msg.metadata.dst_node_id])
            reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(self, messages, *, timeout=None):
        return self.pull_messages(self.push_messages(messages))


def run_inline(server_app: ServerApp, client_app: ClientApp, num_nodes: int, *,
               node_config: Callable[[int], dict] | None = None, verbose: bool = False) -> dict[int, dict]:
    """Run ``server_app`` against ``num_nodes`` copies of ``client_app``, every call in this process, in order.

    The same apps as :func:`run_flower_simulation` runs, without Ray: node ``i`` gets
    ``node_config(i)`` (default ``{"partition-id": i, "num-partitions": num_nodes}``) and
    keeps its own ``Context.state`` across rounds; each message's content is copied on
    delivery, as transport would. Deterministic, and quick to start. Flower's log shows
    warnings only unless ``verbose``. Returns each node's id with its ``node_config``.
    """
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity

    check_positive_int("num_nodes", num_nodes)
    node_config = node_config or (lambda i: {"partition-id": i, "num-partitions": num_nodes})
    run = Run.create_empty(run_id=int.from_bytes(os.urandom(7), "big") + 1)
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    try:
        grid = _InlineGrid(client_app, num_nodes, run, node_config)
        ctx = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
        with quiet_flower(logging.INFO if verbose else logging.WARNING):
            server_app(grid, ctx)
        return {nid: dict(c.node_config) for nid, c in grid._contexts.items()}
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_flower_simulation(server_app: ServerApp, client_app: ClientApp, num_nodes: int, *,
                          num_cpus: int = 1, verbose: bool = False) -> None:
    """Run the pair on Flower's simulation engine (``flwr.simulation.run_simulation``, Ray), then shut Ray down.

    In this process (never ``flwr run``, which installs the app's dependencies into a
    fresh environment); one client at a time on ``num_cpus`` CPUs.
    """
    from flwr.simulation import run_simulation

    check_positive_int("num_nodes", num_nodes)
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    try:
        with quiet_flower(logging.INFO if verbose else logging.WARNING):
                run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_nodes,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": int(num_cpus), "num_gpus": 0}})
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass


# -- a whole experiment: a federation of leaklab clients, recorded and attacked ------------------------

@dataclass
class FlowerRun:
    """A recorded Flower federation of leaklab clients (what :func:`simulate` returns)."""

    recorder: RecordingStrategy | None
    model: nn.Module = field(repr=False)
    partitions: list = field(repr=False)
    config: dict
    history: list = field(default_factory=list)       # (round, accuracy on the test data)
    params: Params = field(default_factory=dict, repr=False)
    wall_time: float = 0.0

    def truth(self, update: ClientUpdate) -> tuple[torch.Tensor, torch.Tensor]:
        """The records a client really trained on in a round (known to the experimenter, not the server)."""
        part = int(update.config["partition-id"])
        data = self.partitions[part]
        b = int(update.config.get(KEY_BATCH, 1)) * (int(update.config.get(KEY_STEPS, 1))
                                                     if update.kind == "parameters" else 1)
        idx = batch_indices(len(data), b, seed=self.config["seed"], partition=part, server_round=update.round)
        return data.x[idx], data.y[idx]

    def attack(self, attack: str = "analytic", **options) -> list[dict]:
        """Every recorded update attacked: one dict per client and round with PSNR, SSIM and the labels found."""
        from .metrics import score_images

        if self.recorder is None:
            raise ValueError("this run was not recorded (record=False): there is nothing to attack")
        shape = tuple(self.partitions[0].input_shape)
        out = []
        updates = sorted(self.recorder.updates(), key=lambda u: (u.round, int(u.config["partition-id"])))
        for u in updates:
            rel = u.release(self.model)
            x, y = self.truth(u)
            rec = rel.reconstruct(input_shape=shape, attack=attack, batch_size=len(x), **options)
            s = score_images(x[None], rec.x.reshape(1, len(x), *shape).detach().cpu())
            y_hat = None if rec.y is None else [int(v) for v in rec.y.reshape(-1)]
            out.append({"round": u.round, "node": u.node_id, "client": int(u.config["partition-id"]),
                        "psnr": [float(v) for v in s.psnr[0]], "ssim": [float(v) for v in s.ssim[0]],
                        "labels": [int(v) for v in y], "labels_found": y_hat, "exact_release": rel.exact,
                        "epsilon": u.config.get("epsilon")})
        return out


def split(data: Dataset, clients: int, per_client: int, *, seed: int = 0) -> list[Dataset]:
    """``clients`` disjoint random partitions of ``per_client`` records of ``data``."""
    check_positive_int("clients", clients)
    check_positive_int("per_client", per_client)
    if clients * per_client > len(data):
        raise ValueError(f"data holds {len(data)} records, fewer than clients * per_client = "
                         f"{clients} * {per_client}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return [data.subset(perm[i * per_client:(i + 1) * per_client]) for i in range(clients)]


def simulate(model: nn.Module, partitions: Sequence[Dataset], *, rounds: int = 3, protocol: str = "fedsgd",
             lr: float = 0.1, local_steps: int = 1, batch_size: int = 1, defense=None, delta: float = 1e-5,
             secure: bool = False, record: bool = True, test: Dataset | None = None, seed: int = 0,
             backend: str = "inline") -> FlowerRun:
    """Run a Flower federation of leaklab clients (one per partition), recorded by :class:`RecordingStrategy`.

    The server runs :class:`FedSGD` (``protocol="fedsgd"``) or Flower's ``FedAvg`` for
    ``rounds`` rounds over every client; ``defense`` goes on each client through a
    :class:`DefenseMod`. ``backend`` is ``"inline"`` (:func:`run_inline`) or ``"ray"``
    (:func:`run_flower_simulation`). With ``test``, the global model's accuracy on it after
    every round is in ``history``. ``model`` is not changed; the final parameters are in
    ``params``. Flower's sampling of the clients draws from Python's ``random``, seeded with
    ``seed`` for the run (and restored afterwards), so that the same seed gives the same run.
    """
    import random

    from .fl import accuracy

    check_choice("backend", backend, ("inline", "ray"))
    check_choice("protocol", protocol, ("fedsgd", "fedavg"))
    check_positive_int("rounds", rounds)
    n = len(partitions)
    t0 = time.perf_counter()
    defense = as_defense(defense)
    mods = [] if defense.name == "none" else [DefenseMod(defense, delta=delta)]
    app = client_app(model, partitions, protocol=protocol, lr=lr, local_steps=local_steps, batch_size=batch_size,
                     seed=seed, mods=mods)
    common = dict(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n, min_evaluate_nodes=0)
    with quiet_flower(logging.ERROR):
        inner = FedSGD(lr=lr, **common) if protocol == "fedsgd" else FedAvg(**common)
    strategy = RecordingStrategy(inner, model=model, secure=secure) if record else inner
    history, final = [], {}
    evaluator = copy.deepcopy(model)

    def evaluate(server_round: int, arrays: ArrayRecord):
        if test is None or server_round == 0:
            return None
        acc = accuracy(_load(evaluator, to_params(evaluator, arrays)), test)
        history.append((server_round, acc))
        return MetricRecord({"accuracy": acc})

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = ConfigRecord({KEY_LR: float(lr), KEY_STEPS: int(local_steps), KEY_BATCH: int(batch_size)})
        res = strategy.start(grid=grid, initial_arrays=to_arrays(model), num_rounds=rounds, train_config=cfg,
                             evaluate_fn=evaluate)
        final.update(to_params(model, res.arrays))

    state = random.getstate()          # Flower samples the clients (and orders their replies) with `random`
    random.seed(seed)
    try:
        if backend == "inline":
            run_inline(server, app, n)
        else:
            run_flower_simulation(server, app, n)
    finally:
        random.setstate(state)
    config = {"clients": n, "rounds": rounds, "protocol": protocol, "lr": lr, "local_steps": local_steps,
              "batch_size": batch_size, "defense": defense.config(), "delta": delta, "secure": secure,
              "seed": seed, "backend": backend, "flwr": FLWR_VERSION}
    return FlowerRun(recorder=strategy if record else None, model=model, partitions=list(partitions),
                     config=config, history=history, params=final, wall_time=time.perf_counter() - t0)
