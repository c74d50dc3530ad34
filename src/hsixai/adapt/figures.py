"""Figures of the adapt stages that plots.py does not draw: the attention gate map and the loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def gate_map(gate: np.ndarray, region: np.ndarray, stats: dict, path: Path, title: str) -> None:
    """The gate a in (1, 2) over the scene [H, W], the target region outlined, with its mean inside and outside."""
    fig, ax = plt.subplots(figsize=(6, 5.4))
    image = ax.imshow(gate, cmap="magma", vmin=1, vmax=2, interpolation="nearest")
    if 0 < region.mean() < 1:
        ax.contour(region, levels=[0.5], colors="cyan", linewidths=1.2)
    ax.set_title(
        f"{title}\nmean gate: in the region {stats['inside']:.3f}, outside {stats['outside']:.3f}"
        if stats.get("outside") is not None
        else f"{title}\nmean gate {stats['inside']:.3f}",
        fontsize=10,
    )
    ax.set_axis_off()
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="gate a = 1 + sigmoid(...)")
    _save(fig, path)


LOSS_PANELS = {"loss_d": "mean D loss", "loss_t": "mean T loss", "loss_supervised": "mean CE of T on its labels"}


def loss_curves(runs: list[dict], thresholds: dict[str, float], path: Path, title: str) -> None:
    """Per-iteration mean D, T and supervised losses of each arm (one seed), log scale.

    `thresholds`: the stopping rule's threshold for each loss it reads (drawn dashed).
    """
    fig, axes = plt.subplots(1, len(LOSS_PANELS), figsize=(16, 4))
    colours = {run["arm"]: plt.get_cmap("tab10")(i) for i, run in enumerate(runs)}  # one colour per arm, all panels
    for ax, (key, label) in zip(axes, LOSS_PANELS.items()):
        for run in runs:
            if run.get(key):
                ax.plot(np.arange(1, len(run[key]) + 1), run[key], label=run["arm"], color=colours[run["arm"]])
        if key in thresholds:
            ax.axhline(thresholds[key], color="grey", linestyle="--", linewidth=1, label="stopping threshold")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{label} per iteration")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
