"""Progress bars: drawn for a person, switched off by LEAKLAB_PROGRESS, never by the chapters."""
import json
from pathlib import Path

import pytest

from leaklab import _progress

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, shown", [("", True), ("1", True), ("on", True), ("0", False),
                                          ("off", False), ("False", False), ("no", False)])
def test_environment_switches_bars(monkeypatch, value, shown):
    monkeypatch.setenv(_progress.ENV, value)
    assert _progress.enabled(True) is shown
    assert _progress.enabled(False) is False
    bar = _progress.trange(3, desc="x")
    try:
        assert bar.disable is (not shown)
        assert list(bar) == [0, 1, 2]
        assert list(_progress.trange(1, 4, progress=False)) == [1, 2, 3]
    finally:
        bar.close()


def test_unset_environment_shows_bars(monkeypatch):
    monkeypatch.delenv(_progress.ENV, raising=False)
    assert _progress.enabled(True) is True


def test_a_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(_progress.ENV, "maybe")
    with pytest.raises(ValueError, match="LEAKLAB_PROGRESS must be one of"):
        _progress.enabled(True)


def test_library_bars_go_through_the_switch():
    """No module draws a tqdm bar of its own, which LEAKLAB_PROGRESS could not switch off."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "leaklab").rglob("*.py")
                 if p.name != "_progress.py" and "tqdm.auto" in p.read_text()]
    assert offenders == []


def test_chapters_leave_bars_to_the_reader():
    """A chapter never switches bars off itself: the reader sees them, the book build hides them."""
    found = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if "progress=False" in "".join(cell["source"]):
                found.append(nb.name)
    assert found == []


def test_book_and_test_builds_switch_bars_off():
    make = (ROOT / "Makefile").read_text()
    for target in ("test:", "book:"):
        body = make.split("\n" + target, 1)[1].split("\n\n", 1)[0]
        assert "LEAKLAB_PROGRESS=0" in body, target
