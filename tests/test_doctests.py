"""The examples in the spine's docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["leaklab", "leaklab.data", "leaklab.data.registry", "leaklab.models", "leaklab.metrics.privacy_loss",
           "leaklab.tradeoff", "leaklab.games.tracing", "leaklab.privacy.accounting"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
