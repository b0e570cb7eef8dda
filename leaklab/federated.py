"""Former home of federated training for utility; it now lives in :mod:`leaklab.fl`.

``leaklab.federated.train_federated`` and :class:`FederatedRun` are the same objects as
:func:`leaklab.fl.train_federated` and :class:`leaklab.fl.FederatedRun`, re-exported here
for one release so that existing code keeps working; new code imports them from
:mod:`leaklab.fl`.
"""
from .fl.simulation import PROTOCOLS, FederatedRun, train_federated

__all__ = ["FederatedRun", "train_federated", "PROTOCOLS"]
