"""Matplotlib figures and tables (Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve_figure(history, title: str = ""):
    """Train and validation loss against iteration, one figure."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if history.train:
        ax.plot(*zip(*history.train), label="train loss", color="tab:blue", alpha=0.8)
    if history.val:
        ax.plot(*zip(*history.val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats / answer token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
