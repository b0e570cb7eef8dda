"""The Secret Polarization Network (SPN) in one place: the defense, the attacks on it, its analysis.

=====================  ==========================================================================
module                 what it holds
=====================  ==========================================================================
``spn.model``          the defense (registered as ``spn``): :class:`SPNModel` (a secret
                       polarization head and class codes beside the task head), :class:`SPN`,
                       the polarization loss, the codes and the client's secret draw
``spn.attacks``        reconstruction against SPN: static (the client's codes unknown),
                       adaptive (the adversary's own draw) and oracle attacks, and
                       :func:`~leaklab.spn.attacks.run_spn_reconstruction` (chapter 10's runs)
``spn.analysis``       the linear-system view of an SPN layer: which part of the error the
                       secret head and codes add, and when the bilinear system is identifiable
=====================  ==========================================================================

The former paths (``leaklab.defenses.spn``, ``leaklab.attacks.spn``, ``leaklab.theory.spn``)
re-export the same names for one release. ``leaklab.spn.attacks`` is imported on its own
(``from leaklab.spn.attacks import spn_static``): it needs the attack machinery, the defense does not.
"""
from .model import (PREDICT_BY, SECRET_ROLES, SPN, SPNModel, class_codes, hamming_predict, polarization_loss,
                    secret_generator)
from .analysis import ERROR_PARTS, analyse_spn_layers, bilinear_identifiability, spn_layer_errors

__all__ = ["PREDICT_BY", "SECRET_ROLES", "SPN", "SPNModel", "class_codes", "hamming_predict", "polarization_loss",
           "secret_generator", "ERROR_PARTS", "analyse_spn_layers", "bilinear_identifiability", "spn_layer_errors"]
