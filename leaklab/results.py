"""Result records: one experiment's config, seed, environment, numbers and wall time.

Records are written as JSON lines, one record a line, so that sweeps can append
and resume. The command line's ``--json`` prints the same records. Both are strict
JSON: an infinite number is ``null`` with a field ``<name>_infinite`` beside it (see
:func:`_jsonable`), read back as the infinity by :meth:`Record.from_dict`.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

__all__ = ["Record", "write_records", "read_records", "completed", "timed", "resume_records", "fingerprint"]


def _version() -> str:
    from ._version import __version__
    return __version__


#: Suffix of the field that marks an infinite number written as ``null`` (see :func:`_jsonable`).
INFINITE = "_infinite"


def _sign(v) -> int:
    """1 for +inf, -1 for -inf, 0 for anything else."""
    return (1 if v > 0 else -1) if isinstance(v, float) and math.isinf(v) else 0


def _jsonable(value):
    """``value`` with tensors, numpy scalars and non-finite floats made strict JSON.

    JSON has no infinity, and a string in a numeric column breaks its numeric readers
    (pandas, jq): an infinite number (the PSNR of an exact reconstruction, the epsilon of
    a release without noise) is written as ``null``, and the dict that holds it gains a
    field ``<name>_infinite`` with its sign, ``1`` (+inf) or ``-1`` (-inf); for a list,
    ``<name>_infinite`` is a list of the same length holding ``0`` where the value is
    finite. NaN is ``null`` without a mark. :func:`_restored` undoes the marks.

    >>> _jsonable({"psnr": float("inf"), "mse": 0.0})
    {'psnr': None, 'psnr_infinite': 1, 'mse': 0.0}
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            k = str(k)
            if isinstance(v, torch.Tensor) or (hasattr(v, "item") and getattr(v, "ndim", 1) == 0):
                v = v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else v.item()
            out[k] = _jsonable(v)
            if _sign(v):
                out[k + INFINITE] = _sign(v)
            elif isinstance(v, (list, tuple)) and any(_sign(x) for x in v):
                out[k + INFINITE] = [_sign(x) for x in v]
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _restored(value):
    """Undo the marks of :func:`_jsonable`: ``null`` beside ``<name>_infinite`` is the infinity again."""
    if isinstance(value, list):
        return [_restored(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _restored(v) for k, v in value.items() if not (k.endswith(INFINITE) and k[:-len(INFINITE)] in value)}
    for k, mark in value.items():
        base = k[:-len(INFINITE)]
        if not k.endswith(INFINITE) or base not in value:
            continue
        if isinstance(mark, list) and isinstance(out[base], list) and len(mark) == len(out[base]):
            out[base] = [math.inf * m if m and v is None else v for v, m in zip(out[base], mark)]
        elif mark in (1, -1) and out[base] is None:
            out[base] = math.inf * mark
    return out


@dataclass
class Record:
    """One result: what was run (``kind``, ``config``, ``seed``), where, and what came out."""

    kind: str
    config: dict
    seed: int
    numbers: dict
    wall_time: float = 0.0
    device: str = "cpu"
    leaklab_version: str = field(default_factory=_version)
    torch_version: str = field(default_factory=lambda: torch.__version__)
    python_version: str = field(default_factory=platform.python_version)
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        known = {f for f in cls.__dataclass_fields__}
        missing = {"kind", "config", "seed", "numbers"} - set(d)
        if missing:
            raise ValueError(f"record is missing fields: {', '.join(sorted(missing))}")
        d = {k: _restored(v) if k in ("config", "numbers") else v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in known})

    def key(self) -> str:
        """A stable identity of what was run (kind, config and seed), for resuming sweeps."""
        return json.dumps([self.kind, _jsonable(self.config), self.seed], sort_keys=True)


def fingerprint(*tensors: torch.Tensor) -> str:
    """A SHA-256 of the tensors' shapes, dtypes and values, in order: what a resume key holds of the data used.

    Two datasets with the same name and size but other records (or labels) get other
    fingerprints, so a sweep into a folder that holds another data's records measures
    its own instead of returning theirs.
    """
    import hashlib

    h = hashlib.sha256()
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fingerprint takes tensors, argument {i} is {type(t).__name__}")
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> Path:
    """Append ``records`` to the JSON-lines file at ``path`` (created with its folder if needed).

    Each record is written as one whole line and flushed to disk before the next,
    so that a kill leaves at most the last line torn (see :func:`resume_records`).
    ``path`` names a file: a path that ends with a separator or names an existing folder
    is refused before anything is written.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text or text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise ValueError(f"path must name a JSON-lines file, got {text!r}, a folder; "
                         f"give a file inside it, e.g. {os.path.join(text or '.', 'records.jsonl')!r}")
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
    return path


def resume_records(path: str | os.PathLike) -> list[Record]:
    """The records of a JSON-lines file about to be appended to, after cutting off a torn last line.

    A sweep killed while writing leaves a last line without its newline (or one that
    is not a whole record): that line is removed from the file, so that the next
    append starts on a fresh line, and the record is measured again. A bad line
    anywhere else is an error (the file is not a sweep's). Duplicate records (same
    :meth:`Record.key`) keep the first. A missing file holds no records.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()                      # what follows the last newline ('' when the file ends cleanly)
    keep = len(raw) - len(tail)
    if lines and tail == b"":
        try:
            Record.from_dict(json.loads(lines[-1].decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError):
            keep -= len(lines[-1]) + 1      # a whole but broken last line: also torn
            lines.pop()
    if keep != len(raw):
        with open(path, "r+b") as f:
            f.truncate(keep)
    out, seen = [], set()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = Record.from_dict(json.loads(line.decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}, line {i}: not a leaklab record ({exc})") from None
        if r.key() not in seen:
            seen.add(r.key())
            out.append(r)
    return out


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read every record from a JSON-lines file (an error names the bad line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Record.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}, line {i}: not a leaklab record ({exc})") from None
    return out


def completed(path: str | os.PathLike) -> set[str]:
    """The keys of the records already in ``path`` (empty if it does not exist)."""
    p = Path(path)
    return {r.key() for r in read_records(p)} if p.exists() else set()


@contextmanager
def timed() -> Iterator[dict]:
    """``with timed() as t: ...`` then ``t["seconds"]`` holds the wall time."""
    t = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield t
    finally:
        t["seconds"] = time.perf_counter() - start
