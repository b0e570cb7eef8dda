"""Federated simulation: what a client releases, what the server sees, and training under a defense.

One place for every federated computation in the book:

* FedSGD: a client releases the gradient of its loss on one batch,
  ``g = (1/B) sum_i grad_theta L(f_theta(x_i), y_i)`` (:mod:`leaklab.fl.gradients`:
  :func:`loss_gradient`, and :func:`batch_gradients` for many trials at once).
* FedAvg: a client takes ``local_steps`` SGD steps from ``theta`` and releases its
  update ``delta = theta_local - theta`` (:mod:`leaklab.fl.local`: :func:`fedavg_update`).
  One local step under a defense is :func:`defended_gradients` (the release path for the
  shared parameters, their own gradient for secret ones) and :func:`local_sgd` takes such
  steps: :func:`train`, :func:`train_federated`, the tracing game's FedAvg updates and the
  membership game's target and shadow models all train with them.
* A round: the server averages the releases (weighted by the clients' sizes); under
  secure aggregation it sees only their sum (:mod:`leaklab.fl.rounds`:
  :func:`federated_round`, :func:`aggregate`, :func:`secure_sum`).
* Training under a defense: :func:`train` (one model, in place: a chosen training
  state) and :func:`train_federated` (clients, rounds, FedSGD or FedAvg, and the
  accuracy a defense leaves; :mod:`leaklab.fl.simulation`).

Every release goes through the one release path (:func:`leaklab.release.release`), so a
defense acts the same way in every protocol. ``leaklab.federated`` is the former home of
:func:`train_federated`; it re-exports it for one release.
"""
from .gradients import (Params, batch_gradients, flatten, loss_gradient, parameters_of, per_sample_gradients,
                        unflatten_like)
from .local import defended_gradients, fedavg_update, local_sgd
from .rounds import Client, RoundView, aggregate, federated_round, secure_sum
from .simulation import PROTOCOLS, FederatedRun, train_federated
from .training import accuracy, check_training_data, epoch_batches, train

__all__ = [
    "Params", "parameters_of", "loss_gradient", "per_sample_gradients", "batch_gradients",
    "flatten", "unflatten_like", "fedavg_update", "aggregate", "secure_sum", "Client",
    "RoundView", "federated_round", "train", "accuracy", "epoch_batches", "check_training_data",
    "defended_gradients", "local_sgd", "train_federated", "FederatedRun", "PROTOCOLS",
]
