"""Former home of this part of SPN; it now lives in :mod:`leaklab.spn.model`.

Re-exported here for one release so that existing imports keep working; new code imports
from :mod:`leaklab.spn` (the map of the subpackage is in its docstring).
"""
from ..spn.model import (  # noqa: F401
    SPN, SPNModel, polarization_loss, class_codes, hamming_predict, secret_generator, PREDICT_BY,
    SECRET_ROLES,
)

__all__ = ["SPN", "SPNModel", "polarization_loss", "class_codes", "hamming_predict", "secret_generator",
           "PREDICT_BY", "SECRET_ROLES"]
