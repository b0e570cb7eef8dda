"""leaklab: measure how shared gradients leak private data.

The library behind the book: datasets with sensitive attributes, the models the
chapters use, a federated simulation, reconstruction attacks and their linear
algebra, inference games, defenses, metrics and audits.

>>> import leaklab
>>> leaklab.get_profile("smoke").name
'smoke'
"""
__version__ = "0.1.0"

from .runtime import describe_device, get_device, make_generator, seed_everything
from .profiles import Profile, get_profile
from .data import Dataset, list_datasets, load_dataset
from .models import build_model
from .results import Record

__all__ = [
    "__version__", "Dataset", "Profile", "Record", "build_model", "describe_device", "get_device",
    "get_profile", "list_datasets", "load_dataset", "make_generator", "seed_everything",
]
