"""Which Flower this integration supports, checked without importing the rest of it."""
from __future__ import annotations

SUPPORTED_FLWR = ">=1.42,<1.43"
_SUPPORTED = (1, 42)
_INSTALL = 'pip install "leaklab[flower]"'


def _flwr_version(flwr) -> str:
    v = getattr(flwr, "__version__", None)
    if v is None:
        from importlib.metadata import version

        v = version("flwr")
    return str(v)


def require_flwr():
    """The ``flwr`` package, checked to be a supported version; a one-line ImportError otherwise."""
    try:
        import flwr
    except ImportError:
        raise ImportError(f"leaklab.flower needs Flower (flwr{SUPPORTED_FLWR}), which is not installed; "
                          f"install it with: {_INSTALL}") from None
    v = _flwr_version(flwr)
    try:
        major_minor = tuple(int(p) for p in v.split(".")[:2])
    except ValueError:
        major_minor = None
    if major_minor != _SUPPORTED:
        raise ImportError(f"leaklab.flower supports flwr{SUPPORTED_FLWR}, found flwr {v}; install a supported "
                          f"version with: {_INSTALL}")
    return flwr


def flwr_version() -> str:
    """The installed Flower's version (call :func:`require_flwr` first)."""
    import flwr

    return _flwr_version(flwr)
