import os

import pytest

os.environ.setdefault("LEAKLAB_PROFILE", "smoke")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty dataset cache for the test."""
    monkeypatch.setenv("LEAKLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
