"""PNG plots for `recgpt evaluate --plot DIR` (matplotlib, Agg backend, no display needed).

- exposure by item-popularity decile, two systems side by side — the paper's Figure 1 (PVR by popularity group);
- category diversity per user (distinct leaf categories in the top-K / K), histogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_exposure_deciles(series: dict[str, Sequence[float]], k: int, path: str | Path) -> Path:
    """Grouped bars: share of top-k slots per popularity decile (1 = most popular tenth of items) per system."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(10)
    for j, (name, shares) in enumerate(series.items()):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, shares, width, label=name)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="uniform exposure")
    ax.set_xticks(x, [str(d + 1) for d in x])
    ax.set_xlabel("item popularity decile (1 = most popular in train)")
    ax.set_ylabel(f"share of top-{k} exposures")
    ax.set_title(f"Exposure by item popularity (top-{k})")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_diversity_hist(series: dict[str, np.ndarray], k: int, path: str | Path) -> Path:
    """Histogram of per-user category diversity (distinct leaf categories in top-k / k) per system."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    # values are j/k: one bin centred on each (coarser past k=20)
    steps = min(k, 20)
    bins = (np.arange(steps + 2) - 0.5) / steps
    for name, values in series.items():
        ax.hist(values, bins=bins, alpha=0.55, label=f"{name} (mean {np.mean(values):.3f})" if len(values) else name)
    ax.set_xlabel(f"distinct leaf categories in top-{k} / {k}")
    ax.set_ylabel("users")
    ax.set_title(f"Category diversity per user (top-{k})")
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
