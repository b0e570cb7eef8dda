"""Audit a Flower federation: record what its server sees, attack it, defend its clients.

The front door of :mod:`leaklab.integrations.flower` (see there), an optional extra:
``pip install "leaklab[flower]"`` (Flower ``>=1.42,<1.43``). Importing this module without
a supported Flower raises a one-line ``ImportError`` that says what to install;
``import leaklab`` never imports Flower.
"""
from __future__ import annotations

from .integrations.flower._compat import require_flwr

require_flwr()          # checked on every fresh import, even when the package below is already loaded

from .integrations.flower import *  # noqa: E402,F401,F403
from .integrations.flower import __all__  # noqa: E402,F401
