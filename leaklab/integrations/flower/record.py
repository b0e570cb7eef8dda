"""What a Flower server receives, kept round by round, and the releases made of it."""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from torch import nn

from .arrays import (KEY_BATCH, KEY_LR, KEY_STEPS, LEAKLAB_RECORD, LazyParams, Params, _config_dict, _load,
                     to_params)

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
        from ...attacks import reconstruct

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
    #: (node id, reason) of every reply that was an error
    errors: list = field(default_factory=list)

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
            if msg.has_error():
                rec.errors.append((int(msg.metadata.src_node_id), str(msg.error.reason)))
                continue
            if len(msg.content.array_records) != 1:
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
