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

import os

from ._compat import SUPPORTED_FLWR, flwr_version, require_flwr

require_flwr()
#: The installed Flower's version.
FLWR_VERSION = flwr_version()
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")   # never install into an env

from .arrays import LEAKLAB_RECORD, LazyParams, to_arrays, to_params  # noqa: E402
from .client import DefenseMod, batch_indices, client_app  # noqa: E402
from .record import (ClientUpdate, FedSGD, FlowerRelease, RecordingStrategy, RoundRecord,  # noqa: E402
                     SecureAggregate)
from .run import FlowerRun, quiet_flower, run_flower_simulation, run_inline, simulate, split  # noqa: E402

__all__ = ["SUPPORTED_FLWR", "FLWR_VERSION", "require_flwr", "to_params", "to_arrays", "LazyParams", "ClientUpdate",
           "FlowerRelease", "RoundRecord", "SecureAggregate", "RecordingStrategy", "FedSGD", "client_app",
           "DefenseMod", "FlowerRun", "batch_indices", "split", "simulate", "run_inline", "run_flower_simulation", "quiet_flower", "LEAKLAB_RECORD"]
