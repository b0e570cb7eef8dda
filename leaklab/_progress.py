"""Progress bars: shown when a person runs the work, hidden where a book or test build runs it.

Every long loop of leaklab takes ``progress=`` (``True`` by default). A bar is drawn
when ``progress`` is true *and* the environment variable ``LEAKLAB_PROGRESS`` does not
switch bars off (``0``, ``off``, ``false``, ``no``). ``make book`` and ``make test``
set ``LEAKLAB_PROGRESS=0``, so the executed chapters carry no bars, while a reader who
runs a chapter in JupyterLab or Colab sees one on every long cell (a widget that
disappears when the loop is done: ``leave=False``).

A loop that ends before its planned length by design (an attack whose problems have all
converged, a stopping rule) calls :meth:`Bar.stop` before it leaves: the bar then counts
what was done as all there was to do and closes as a finished bar. Without it a
notebook's widget would turn red, the colour tqdm gives a loop that died of an error,
and a reader would see a column of apparently failed runs. An error in the loop still
leaves the bar red.
"""
from __future__ import annotations

import os

__all__ = ["ENV", "Bar", "enabled", "tqdm", "trange"]

ENV = "LEAKLAB_PROGRESS"
_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")


def enabled(progress: bool = True) -> bool:
    """Whether a bar asked for with ``progress`` is drawn (``LEAKLAB_PROGRESS`` may switch all off)."""
    if not progress:
        return False
    value = os.environ.get(ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{ENV} must be one of 1, on, true, yes, 0, off, false, no; got {os.environ[ENV]!r}")


class Bar:
    """A ``tqdm.auto`` bar that a loop may end early without looking failed.

    Iterate it like a tqdm bar, or drive it by hand (``update``, ``set_postfix``,
    ``close``); any other attribute is the tqdm bar's. It counts an item once the
    loop's body for it is done, and closes itself when the iterable is exhausted.
    """

    def __init__(self, iterable=None, *, progress: bool = True, **kwargs):
        from tqdm.auto import tqdm as _tqdm
        if iterable is not None and "total" not in kwargs:
            try:
                kwargs["total"] = len(iterable)
            except TypeError:
                pass
        self._iterable = iterable
        self._bar = _tqdm(disable=not enabled(progress), **kwargs)

    def __getattr__(self, name):
        return getattr(self._bar, name)

    def __len__(self) -> int:
        return len(self._iterable)

    def __iter__(self):
        if self._iterable is None:
            raise TypeError("this progress bar has no iterable: drive it with update() and close()")
        update = self._bar.update
        for item in self._iterable:
            yield item
            update(1)
        self.close()

    def stop(self) -> None:
        """End the bar where the loop stopped, as a finished bar (for a normal early stop)."""
        bar = self._bar
        if not bar.disable and getattr(bar, "total", None) is not None and bar.n < bar.total:
            bar.total = bar.n
            container = getattr(bar, "container", None)       # a notebook widget: its bar's length
            if container is not None:
                container.children[1].max = max(bar.n, 1)
            bar.refresh()
        bar.close()

    def close(self) -> None:
        self._bar.close()


def tqdm(iterable=None, *, progress: bool = True, **kwargs) -> Bar:
    """A :class:`Bar` over ``iterable`` (or driven by hand), drawn only when :func:`enabled` says so."""
    return Bar(iterable, progress=progress, **kwargs)


def trange(*args: int, progress: bool = True, **kwargs):
    """``tqdm(range(*args))`` drawn only when :func:`enabled` says so."""
    return tqdm(range(*args), progress=progress, **kwargs)
