"""The theory behind the attacks: reconstruction as a linear system.

:mod:`leaklab.theory.linear` builds the system ``A x = b`` that one layer's
gradients pose to an attacker who knows the weights and the back-propagated
errors, decides uniqueness by rank, constructs twins along the null space and
bounds the effect of noise.
"""
from .linear import (LayerAnalysis, LinearSystem, analyse_layer, conv_output_size, conv_system,
                     fc_system, layer_errors, layer_gradients, noise_sweep)

__all__ = ["LayerAnalysis", "LinearSystem", "analyse_layer", "conv_output_size", "conv_system",
           "fc_system", "layer_errors", "layer_gradients", "noise_sweep"]
