"""Progress bars: drawn for a person, switched off by LEAKLAB_PROGRESS, never by the chapters."""
import json
from pathlib import Path

import pytest
import torch

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


# -- a loop that stops early ends with a finished bar, not a failed one -------------------------

@pytest.fixture
def widget_bars(monkeypatch):
    """Bars drawn as notebook widgets, as JupyterLab and Colab draw them."""
    pytest.importorskip("ipywidgets")
    import tqdm.auto
    import tqdm.notebook
    monkeypatch.setenv(_progress.ENV, "1")
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)
    made = []
    real = _progress.Bar.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(_progress.Bar, "__init__", spy)
    return made


def _style(bar):
    return bar.container.children[1].bar_style


def test_a_stopped_widget_is_not_red(widget_bars, capsys):
    bar = _progress.trange(10, desc="x", leave=False)
    for i in bar:
        if i == 4:
            break
    bar.stop()
    assert (bar.n, bar.total) == (4, 4)
    assert _style(bar) != "danger"
    assert bar.container.layout.visibility == "hidden"      # leave=False: it disappears


def test_a_finished_widget_is_not_red(widget_bars, capsys):
    bar = _progress.trange(5, desc="x", leave=True)
    assert list(bar) == [0, 1, 2, 3, 4]
    assert _style(bar) == "success"


def test_an_error_still_leaves_the_widget_red(widget_bars, capsys):
    """A loop that dies of an error is shown as such: only a normal stop is made clean."""
    bar = _progress.trange(10, desc="x", leave=False)
    with pytest.raises(RuntimeError):
        for i in bar:
            if i == 3:
                raise RuntimeError("boom")
    bar.close()
    assert _style(bar) == "danger"


def test_a_stopped_text_bar_reads_complete(monkeypatch):
    import io
    monkeypatch.setenv(_progress.ENV, "1")
    out = io.StringIO()
    bar = _progress.trange(10, desc="y", leave=True, file=out, mininterval=0)
    for i in bar:
        if i == 4:
            break
    bar.stop()
    last = out.getvalue().rstrip().split("\r")[-1]             # what the terminal shows at the end
    assert last.startswith("y: 100%") and "4/4" in last


def test_lbfgs_that_converges_early_leaves_no_red_bar(widget_bars, capsys):
    """Batched L-BFGS almost always ends before its budget; its widget must close as finished."""
    from leaklab.attacks import lbfgs

    def fg(v, idx=None):
        return (v ** 2).sum(-1), 2 * v

    v0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    _, f, info = lbfgs(fg, v0, iters=50, retries=2, restart=lambda idx, k: v0[idx])
    assert bool(info["converged"].all()) and info["iterations"] < 50 * 3
    bars = [b for b in widget_bars if b.desc.startswith("L-BFGS")]
    assert len(bars) == 1
    assert _style(bars[0]) != "danger"
    assert bars[0].container.layout.visibility == "hidden"
