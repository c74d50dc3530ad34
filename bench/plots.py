"""The scaling plots of docs/performance.md, drawn from the benchmarks' JSON files.

Small on purpose (a few tens of KB each): they live in git under docs/.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import result_path  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

STYLE = {"cnn2d": ("tab:blue", "o"), "vit": ("tab:orange", "s")}


def draw(results_dir: Path, plot_dir: Path, device: str = "cpu") -> list[Path]:
    """Every plot whose inputs exist in `results_dir`; the paths written."""
    suffix = "" if device == "cpu" else f"_{device}"
    plot_dir.mkdir(parents=True, exist_ok=True)
    done = []
    train, xai = _load(results_dir, "train", device), _load(results_dir, "xai", device)
    if train and xai:
        done.append(patch_scaling(train, xai, plot_dir / f"bench_patch_scaling{suffix}.png"))
    prepare, pipeline = _load(results_dir, "prepare", device), _load(results_dir, "pipeline", device)
    if prepare:
        done.append(scene_scaling(prepare, pipeline, plot_dir / f"bench_scene_scaling{suffix}.png"))
    return done


def patch_scaling(train: dict, xai: dict, path: Path) -> Path:
    """Training and attribution time per sample against patch size, per model (log scale)."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.9), sharex=True)
    for ax, rows, key, unit, title in (
        (axes[0], train["training"], "ms_per_sample", "ms", "training (forward, backward, step)"),
        (axes[1], xai["attribution"], "ours_s_per_sample", "s", "attribution (IG x NoiseTunnel)"),
    ):
        for model, (colour, marker) in STYLE.items():
            points = sorted((r["patch_size"], r[key]) for r in rows if r["model"] == model)
            if points:
                ax.plot(*zip(*points), marker=marker, color=colour, label=model, lw=1.3, ms=4)
        ax.set(yscale="log", xlabel="patch size (px)", ylabel=f"{unit} per sample", title=title)
        ax.yaxis.set_minor_formatter(NullFormatter())  # minor labels on a short log axis overlap
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"cost against patch size ({train['device']}, {train['machine']['torch_threads']} threads)", fontsize=10
    )
    return _save(fig, path)


def scene_scaling(prepare: dict, pipeline: dict | None, path: Path) -> Path:
    """`prepare`'s wall time and peak RSS against scene size, ours and the in-memory version."""
    points = [(r["megapixels"], r["ours"], r["naive"]) for r in prepare["sizes"]]
    if pipeline:  # the full size, measured in the same run by bench_pipeline.py
        _, h, w = pipeline["scene"]
        points.append((h * w / 1e6, pipeline["stages"]["prepare"], pipeline["stages"]["prepare_naive"]))
    points.sort(key=lambda p: p[0])
    mp = [p[0] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.9), sharex=True)
    for ax, key, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mb", "peak RSS (MB)")):
        ax.plot(mp, [p[1][key] for p in points], marker="o", label="prepare (streamed)", lw=1.3, ms=4)
        ax.plot(mp, [p[2][key] for p in points], marker="s", label="in-memory version", lw=1.3, ms=4)
        ax.axhline(prepare["startup"][key], color="grey", ls=":", lw=1, label="command start-up alone")
        ax.set(xlabel="scene size (megapixels, 234 bands)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("prepare against scene size (the rightmost point is the full 1215 x 1091 PRISMA scene)", fontsize=10)
    return _save(fig, path)


def _load(results_dir: Path, name: str, device: str) -> dict | None:
    path = result_path(name, device, results_dir)
    return json.loads(path.read_text()) if path.is_file() else None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
