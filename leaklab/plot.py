"""The figures the book shows. Each function returns a matplotlib Figure."""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["to_numpy_image", "image_grid", "sample_grid", "table_heatmap", "compare_rows", "threat_model"]


def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """A (C, H, W) tensor as an (H, W) or (H, W, 3) array in [0, 1] for imshow."""
    x = x.detach().float().cpu().clamp(0, 1)
    if x.ndim == 3 and x.shape[0] == 1:
        return x[0].numpy()
    if x.ndim == 3:
        return x.permute(1, 2, 0).numpy()
    return x.numpy()


def image_grid(images: torch.Tensor, *, titles=None, ncols: int = 8, size: float = 1.2, suptitle=None):
    """Show a batch of images ``(N, C, H, W)`` as a grid."""
    import matplotlib.pyplot as plt

    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = to_numpy_image(images[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def table_heatmap(x: torch.Tensor, *, feature_names=None, title=None):
    """Show tabular records ``(N, F)`` as a heat map, one row per record."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(12, 1 + 0.45 * x.shape[1]), 0.25 * x.shape[0] + 1.2))
    im = ax.imshow(x.detach().cpu().numpy(), aspect="auto", cmap="coolwarm", vmin=-2.5, vmax=2.5)
    ax.set_ylabel("record")
    if feature_names is not None:
        ax.set_xticks(range(len(feature_names)), feature_names, rotation=60, ha="right", fontsize=8)
    fig.colorbar(im, ax=ax, label="standardised value")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def sample_grid(dataset, n: int = 32, *, seed: int = 0):
    """A figure of ``n`` random records of ``dataset`` (images as a grid, tables as a heat map)."""
    gen = torch.Generator().manual_seed(seed)
    sub = dataset.sample(min(n, len(dataset)), generator=gen)
    if dataset.modality == "image":
        titles = [str(int(v)) for v in sub.y]
        return image_grid(sub.x, titles=titles, suptitle=f"{dataset.name}: {len(sub)} samples (label above)")
    x = sub.x.reshape(len(sub), -1)
    return table_heatmap(x, title=f"{dataset.name}: {len(sub)} records")


def compare_rows(rows: dict[str, torch.Tensor], *, size: float = 1.2):
    """Images in labelled rows, e.g. ``{"private": x, "reconstruction": x_hat}``."""
    import matplotlib.pyplot as plt

    n = max(v.shape[0] for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n + 1.2, size * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < imgs.shape[0]:
                img = to_numpy_image(imgs[c])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def threat_model():
    """Three panels: what the server sees under FedSGD, FedAvg and secure aggregation."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    panels = [
        ("FedSGD", ["∇L(θ; batch₁)", "∇L(θ; batch₂)", "∇L(θ; batch₃)"], "every client's gradient"),
        ("FedAvg", ["θ₁ − θ  (K steps)", "θ₂ − θ  (K steps)", "θ₃ − θ  (K steps)"], "every client's update"),
        ("Secure aggregation", ["masked", "masked", "masked"], "only the sum Σ"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, msgs, sees) in zip(axes, panels):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 10)
        ax.axis("off")
        ax.set_title(title, fontsize=12)
        ax.add_patch(FancyBboxPatch((3.2, 7.6), 3.6, 1.6, boxstyle="round,pad=0.2", fc="#f4d6d6", ec="#a33"))
        ax.text(5, 8.4, f"server sees\n{sees}", ha="center", va="center", fontsize=9)
        for i, msg in enumerate(msgs):
            x = 1.7 + 3.3 * i
            ax.add_patch(FancyBboxPatch((x - 1.2, 0.6), 2.4, 1.4, boxstyle="round,pad=0.2", fc="#d6e4f4", ec="#35a"))
            ax.text(x, 1.3, f"client {i + 1}\nprivate data", ha="center", va="center", fontsize=8)
            ax.add_patch(FancyArrowPatch((x, 2.3), (5 + (x - 5) * 0.35, 7.3), arrowstyle="-|>", mutation_scale=12,
                                         color="#555"))
            ax.text(x + (0.1 if i != 1 else 0.15), 4.6 - 0.0 * i, msg, ha="center", va="center", fontsize=7.5,
                    rotation=0, bbox=dict(fc="white", ec="none", alpha=0.85))
    fig.tight_layout()
    return fig
