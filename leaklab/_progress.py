"""Progress bars: shown when a person runs the work, hidden where a book or test build runs it.

Every long loop of leaklab takes ``progress=`` (``True`` by default). A bar is drawn
when ``progress`` is true *and* the environment variable ``LEAKLAB_PROGRESS`` does not
switch bars off (``0``, ``off``, ``false``, ``no``). ``make book`` and ``make test``
set ``LEAKLAB_PROGRESS=0``, so the executed chapters carry no bars, while a reader who
runs a chapter in JupyterLab or Colab sees one on every long cell (a widget that
disappears when the loop is done: ``leave=False``).
"""
from __future__ import annotations

import os

__all__ = ["ENV", "enabled", "tqdm", "trange"]

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


def tqdm(iterable=None, *, progress: bool = True, **kwargs):
    """``tqdm.auto.tqdm`` drawn only when :func:`enabled` says so."""
    from tqdm.auto import tqdm as _tqdm
    return _tqdm(iterable, disable=not enabled(progress), **kwargs)


def trange(*args: int, progress: bool = True, **kwargs):
    """``tqdm(range(*args))`` drawn only when :func:`enabled` says so."""
    return tqdm(range(*args), progress=progress, **kwargs)
