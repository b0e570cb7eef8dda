"""Attacks on shared gradients: reconstruction of inputs and inference of secrets."""
from .base import Reconstruction, get_attack, list_attacks, register_attack
from . import analytic, rgap  # noqa: F401  (register the "analytic" and "rgap" attacks, the "rgapnet" model)
from .analytic import fc_input_from_gradients
from . import optimization as _optimization  # noqa: F401  (registers dlg, idlg, ig)
from .labels import recover_labels
from .optimization import dlg, idlg, ig, lbfgs
from .run import ReconstructionRun, photographs, run_reconstruction
from .byo import reconstruct
# SPN's attacks live in leaklab.spn.attacks; importing it registers spn_static, spn_adaptive, spn_oracle
from ..spn import attacks as _spn_attacks  # noqa: F401,E402
from . import imprint as _imprint  # noqa: F401,E402  (registers imprint and trap: a malicious server's reading)
from .malicious import run_imprint  # noqa: E402

__all__ = ["Reconstruction", "get_attack", "list_attacks", "register_attack"]
__all__ += ["ReconstructionRun", "dlg", "idlg", "ig", "lbfgs", "photographs", "reconstruct", "recover_labels", "run_reconstruction"]
__all__ += ["analytic", "fc_input_from_gradients", "rgap"]
__all__ += ["run_imprint"]
