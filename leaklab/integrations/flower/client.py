"""The client side: leaklab clients as a Flower ClientApp, and a mod that puts a leaklab defense on them."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from ..._checks import check_choice, check_positive_int
from ...data import Dataset
from ...defenses import DPSGD, as_defense
from .arrays import (_DEFENSE_STATE, _PRIVACY_STATE, KEY_BATCH, KEY_LR, KEY_STEPS, LEAKLAB_RECORD, _config_dict,
                     _load, to_arrays, to_params)

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
    from ...fl import fedavg_update, loss_gradient

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
        from ...fl import accuracy

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
