"""The version of leaklab (one place: the package, the result records and the command read it)."""
__version__ = "0.1.0"
