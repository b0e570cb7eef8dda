"""Adapters at the boundary between leaklab and the systems users run (one subpackage per system).

Each is an optional extra with a one-line error when its system is missing; the core never
imports them. ``leaklab.flower`` is the front door of :mod:`leaklab.integrations.flower`.
"""
