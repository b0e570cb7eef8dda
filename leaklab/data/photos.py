"""Photographs shipped with scikit-image: real, natural images that work offline.

>>> photographs(16).shape
torch.Size([9, 3, 16, 16])
"""
from __future__ import annotations

import functools

import torch

from .._checks import check_choice, check_positive_int

__all__ = ["PHOTOGRAPHS", "photographs"]

#: The scikit-image photographs used as natural private images (they ship with the package, offline).
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
               "hubble_deep_field", "retina", "camera")


def photographs(size: int = 32, *, grey: bool = False, names=PHOTOGRAPHS) -> torch.Tensor:
    """Photographs shipped with scikit-image, resized to ``size`` x ``size``: ``(N, C, size, size)`` in [0, 1].

    Colour (``C = 3``) unless ``grey``; grey originals are repeated to RGB. They
    are real, natural images available offline, a stand-in for CIFAR-10 when it
    cannot be downloaded.
    """
    check_positive_int("size", size, minimum=4)
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError("names must hold at least one photograph name")
    for n in names:
        check_choice("photograph", n, PHOTOGRAPHS)
    return _photographs(size, bool(grey), tuple(names)).clone()


@functools.lru_cache(maxsize=16)
def _photographs(size: int, grey: bool, names: tuple[str, ...]) -> torch.Tensor:
    import numpy as np
    import torch.nn.functional as F
    from skimage import data as skdata

    out = []
    for name in names:
        a = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        img = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
        if grey:   # ITU-R BT.709 luminance, as skimage.color.rgb2gray
            img = (img * torch.tensor([0.2125, 0.7154, 0.0721]).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
        out.append(F.interpolate(img, size=(size, size), mode="area")[0])  # box filter: averages each block
    return torch.stack(out).clamp(0.0, 1.0).contiguous()
