"""Former home of this part of SPN; it now lives in :mod:`leaklab.spn.attacks`.

Re-exported here for one release so that existing imports keep working; new code imports
from :mod:`leaklab.spn` (the map of the subpackage is in its docstring).
"""
from ..spn.attacks import (  # noqa: F401
    split_release, spn_static, spn_adaptive, spn_oracle, spn_matching_objective, SPN_METHODS,
    run_spn_reconstruction, SPN_ATTACKERS,
)

__all__ = ["split_release", "spn_static", "spn_adaptive", "spn_oracle", "spn_matching_objective",
           "SPN_METHODS", "run_spn_reconstruction", "SPN_ATTACKERS"]
