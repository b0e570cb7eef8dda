"""The theory behind the attacks: reconstruction as a linear system, and information limits.

:mod:`leaklab.theory.linear` builds the system ``A x = b`` that one layer's
gradients pose to an attacker who knows the weights and the back-propagated
errors, decides uniqueness by rank, constructs twins along the null space and
bounds the effect of noise. :mod:`leaklab.theory.information` holds the
information-theoretic limits: GDP's AUROC ceiling, Fano's bound and estimates of the
information that attack scores carry.
"""
from .linear import (LayerAnalysis, LinearSystem, analyse_layer, conv_output_size, conv_system,
                     fc_system, layer_errors, layer_gradients, noise_sweep)
from .information import (MIEstimate, classifier_mi, dpsgd_attribute_auroc_bound, dpsgd_attribute_mu,
                          fano_error_bound, gaussian_mi, gdp_auroc_bound, gdp_epsilon)

__all__ = ["LayerAnalysis", "LinearSystem", "analyse_layer", "conv_output_size", "conv_system",
           "fc_system", "layer_errors", "layer_gradients", "noise_sweep"]
__all__ += ["MIEstimate", "classifier_mi", "dpsgd_attribute_auroc_bound", "dpsgd_attribute_mu",
            "fano_error_bound", "gaussian_mi", "gdp_auroc_bound", "gdp_epsilon"]
