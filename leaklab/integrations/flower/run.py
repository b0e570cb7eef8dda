"""Running a ServerApp with a ClientApp (in this process, or on Flower's engine), and whole recorded experiments."""
from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

from ..._checks import check_choice, check_positive_int
from ...data import Dataset
from ...defenses import as_defense
from ._compat import flwr_version
from .arrays import KEY_BATCH, KEY_LR, KEY_STEPS, Params, _load, to_arrays, to_params
from .client import DefenseMod, batch_indices, client_app
from .record import ClientUpdate, FedSGD, RecordingStrategy

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
        from ...metrics import score_images

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

    from ...fl import accuracy

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
        if len(res.arrays) == 0:
            errs = [e for r in getattr(strategy, "rounds", {}).values() for e in r.errors]
            why = f": node {errs[0][0]} replied {errs[0][1]!r}" if errs else ""
            raise ValueError(f"no round of the federation was aggregated (every client failed){why}")
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
              "seed": seed, "backend": backend, "flwr": flwr_version()}
    return FlowerRun(recorder=strategy if record else None, model=model, partitions=list(partitions),
                     config=config, history=history, params=final, wall_time=time.perf_counter() - t0)
