"""Former home of this part of SPN; it now lives in :mod:`leaklab.spn.analysis`.

Re-exported here for one release so that existing imports keep working; new code imports
from :mod:`leaklab.spn` (the map of the subpackage is in its docstring).
"""
from ..spn.analysis import (  # noqa: F401
    spn_layer_errors, bilinear_identifiability, analyse_spn_layers, ERROR_PARTS,
)

__all__ = ["spn_layer_errors", "bilinear_identifiability", "analyse_spn_layers", "ERROR_PARTS"]
