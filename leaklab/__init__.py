"""leaklab: measure how shared gradients leak private data.

The library behind the book: datasets with sensitive attributes, the models the
chapters use, a federated simulation, reconstruction attacks and their linear
algebra, inference games, defenses, metrics and audits.

>>> import leaklab
>>> leaklab.get_profile("smoke").name
'smoke'

The subpackages (``leaklab.attacks``, ``leaklab.games``, ``leaklab.metrics``, ...)
are imported on first use (PEP 562), so that ``import leaklab`` and the command's
start-up cost little more than importing torch:

>>> leaklab.metrics.psnr.__name__
'psnr'
"""
from ._version import __version__

from .runtime import describe_device, get_device, make_generator, seed_everything
from .profiles import Profile, get_profile
from .data import Dataset, list_datasets, load_dataset
from .models import build_model
from .results import Record

#: Submodules reachable as attributes of the package, imported when first used.
SUBMODULES = ("attacks", "cli", "data", "defenses", "fl", "games", "metrics", "models", "plot",
              "profiles", "release", "results", "runtime", "theory")

__all__ = [
    "__version__", "Dataset", "Profile", "Record", "build_model", "describe_device", "get_device",
    "get_profile", "list_datasets", "load_dataset", "make_generator", "seed_everything",
]


def __getattr__(name: str):
    if name in SUBMODULES:
        import importlib

        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib.util

    present = [n for n in SUBMODULES if importlib.util.find_spec(f"{__name__}.{n}") is not None]
    return sorted(set(globals()) | set(present))
