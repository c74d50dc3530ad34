"""Figures. Every function takes plain arrays and writes one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# One colour per crop, in label order (0..K-1); extended with tab20 for larger class sets.
CROP_COLOURS = ["#e6c229", "#f17105", "#6bb344", "#1a8fe3", "#d11149", "#6e4f8e"]


def class_colours(n: int) -> list:
    extra = [plt.get_cmap("tab20")(i) for i in range(20)]
    return (CROP_COLOURS + extra)[:n]


def with_gaps(wavelengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where bands were removed, so lines break across the gaps instead of bridging them."""
    wavelengths = np.asarray(wavelengths, dtype=float)
    step = np.median(np.diff(wavelengths)) if len(wavelengths) > 1 else 1.0
    gaps = np.flatnonzero(np.diff(wavelengths) > 2.5 * step) + 1
    wl = np.insert(wavelengths, gaps, np.nan)
    vals = np.insert(np.asarray(values, dtype=float), gaps, np.nan, axis=-1)
    return wl, vals


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def false_colour(rgb: np.ndarray, band_labels: Sequence[str], path: Path, title: str) -> None:
    """A 2%-98% stretched composite of three bands, rgb [3, H, W]."""
    lo = np.percentile(rgb, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(rgb, 98, axis=(1, 2), keepdims=True)
    img = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-12), 0, 1).transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(6, 6 * img.shape[0] / img.shape[1] + 0.4))
    ax.imshow(img, interpolation="nearest")
    ax.set_title(f"{title}\nR, G, B = {', '.join(band_labels)}", fontsize=9)
    ax.set_axis_off()
    _save(fig, path)


def label_maps(maps: dict[str, np.ndarray], class_names: Sequence[str], path: Path, columns: int = 0) -> None:
    """Label maps on a grid of `columns` per row (0 = one row), -1 = unlabelled shown white,
    with one legend of class names."""
    k = len(class_names)
    cmap = ListedColormap(["#ffffff"] + class_colours(k))
    columns = columns or len(maps)
    rows = -(-len(maps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.9 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (title, labels) in zip(axes.ravel(), maps.items()):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a light frame shows the scene's extent around sparse masks
            spine.set_edgecolor("#bbbbbb")
        ax.imshow(labels + 1, cmap=cmap, vmin=0, vmax=k, interpolation="nearest")
        ax.set_title(f"{title} ({int((labels >= 0).sum())} px)", fontsize=10)
    handles = [Patch(color=c, label=n) for c, n in zip(class_colours(k), class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 6), frameon=False, fontsize=9)
    fig.subplots_adjust(bottom=0.14 / rows, wspace=0.05, hspace=0.15)
    _save(fig, path)


def class_spectra(
    wavelengths: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    counts: Sequence[int],
    class_names: Sequence[str],
    unit: str,
    path: Path,
    title: str,
) -> None:
    """Mean spectrum per class (mean [K, bands]) with a +-1 std band, gaps where bands were removed."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (name, colour) in enumerate(zip(class_names, class_colours(len(class_names)))):
        wl, m = with_gaps(wavelengths, mean[k])
        _, s = with_gaps(wavelengths, std[k])
        ax.plot(wl, m, color=colour, lw=1.6, label=f"{name} (n={counts[k]})")
        ax.fill_between(wl, m - s, m + s, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("wavelength (nm)" if unit == "nm" else unit)
    ax.set_ylabel("raw value (reflectance)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)


def training_curves(histories: Sequence[Sequence[dict]], path: Path, title: str) -> None:
    """Training loss and dev macro-F1 per epoch, one line per instance."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["loss"] for h in history], marker=".", label=f"instance {i}")
        ax_f1.plot(epochs, [h.get("f1_macro_val", np.nan) for h in history], marker=".", label=f"instance {i}")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"{title}: loss")
    ax_f1.set(xlabel="epoch", ylabel="dev macro F1", title=f"{title}: dev macro F1", ylim=(0, 1))
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix [true, predicted] with counts in the cells."""
    matrix = np.asarray(matrix, dtype=float)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(class_names) + 2.5, 1.0 * len(class_names) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j, i, f"{int(count)}", ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.6 else "black"
        )
    ax.set_xticks(range(len(class_names)), class_names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save(fig, path)


def classification_map(
    prediction: np.ndarray, reference: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """The predicted scene next to the test ground truth (-1 = unlabelled, white)."""
    label_maps({title: prediction, "test ground truth": reference}, class_names, path)


def attribution_maps(maps: np.ndarray, present: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Where in the patch the evidence lies: per class, the positive attribution summed over bands [p, p]."""
    k = len(class_names)
    fig, axes = plt.subplots(1, k, figsize=(2.4 * k, 2.8), squeeze=False)
    for ax, name, attribution, ok in zip(axes[0], class_names, maps, present):
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
        if not ok:
            ax.text(
                0.5,
                0.5,
                "no correctly\nclassified sample",
                ha="center",
                va="center",
                fontsize=8,
                transform=ax.transAxes,
            )
            continue
        spatial = np.clip(attribution, 0, None).sum(axis=0)
        ax.imshow(spatial, cmap="magma", interpolation="nearest")
        centre = spatial.shape[0] // 2
        ax.plot(centre, centre, marker="+", color="cyan", markersize=10)  # the classified pixel
    fig.suptitle(f"{title}: positive IG attribution summed over bands", fontsize=10)
    _save(fig, path)


def class_profiles(
    wavelengths: np.ndarray, mean_profiles: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """Per class, the mean spectral attribution profile against wavelength, one line per instance.

    mean_profiles [instances, classes, bands]; NaN rows (no usable samples) are skipped.
    """
    k = len(class_names)
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False, sharex=True)
    for c, (ax, name) in enumerate(zip(axes.ravel(), class_names)):
        for i, profile in enumerate(mean_profiles[:, c]):
            if np.isfinite(profile).all():
                wl, values = with_gaps(wavelengths, profile)
                ax.plot(wl, values, lw=1.2, label=f"instance {i}")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[k:]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("wavelength (nm)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def distance_heatmap(distances: np.ndarray | None, path: Path, title: str) -> None:
    """A symmetric matrix of distances between instances, with values in the cells (None: a note)."""
    if distances is None:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "needs at least 2 model instances\nwith common correct samples", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    n = len(distances)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.2 * n + 1.5))
    image = ax.imshow(distances, cmap="viridis", vmin=0)
    for (i, j), value in np.ndenumerate(distances):
        ax.text(
            j,
            i,
            f"{value:.3f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value < 0.6 * max(distances.max(), 1e-12) else "black",
        )
    ax.set_xticks(range(n), [f"#{i}" for i in range(n)])
    ax.set_yticks(range(n), [f"#{i}" for i in range(n)])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    _save(fig, path)


SELECTION_PANELS = (  # (row key, y label); each quantity its own panel
    ("f1", "macro F1"),
    ("consistency_jsdiv", "consistency_jsdiv"),
    ("consistency_instances", "consistency_instances"),
    ("consistency_concordance", "consistency_concordance"),
    ("centre_share", "centre share"),
    ("leakage", "leakage share"),
)
F1_LINES = (
    ("f1_macro_test_leakfree", "test F1, leak-free pixels", "#2ca02c", "s"),
    ("f1_macro_test", "test F1, all pixels", "#98df8a", "v"),
    ("f1_macro_val", "validation F1", "#1f77b4", "o"),
)
LEAKAGE_LINES = (
    ("test_same_class", "test: same-class training pixel in patch", "#d62728", "-"),
    ("test_any_class", "test: any training pixel in patch", "#d62728", ":"),
    ("dev_same_class", "dev: same-class training pixel in patch", "#ff7f0e", "-"),
    ("dev_any_class", "dev: any training pixel in patch", "#ff7f0e", ":"),
)


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def _errorbar_ci(ax, xs, rows, key, colour, marker, label) -> None:
    values = _values(rows, key)
    # [n, 2]; reshaped so that a group whose every point is missing (n = 0) still draws an empty panel
    ci = np.array([r.get(f"{key}_ci") or [np.nan, np.nan] for r in rows], dtype=float).reshape(-1, 2)
    err = np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))
    ax.errorbar(xs, values, yerr=np.nan_to_num(err), fmt=marker + "-", color=colour, capsize=3, label=label)


def _f1_panel(ax, xs, rows) -> None:
    for key, label, colour, marker in F1_LINES:
        values, std = _values(rows, key), _values(rows, f"{key}_std")
        if np.isnan(values).all():
            continue
        ax.errorbar(
            xs,
            values,
            yerr=np.nan_to_num(std),
            fmt=marker + "-",
            color=colour,
            capsize=3,
            label=f"{label} (mean ± std over instances)",
        )
        for x, r in zip(xs, rows):  # each instance, faint
            each = [v for v in (r.get("per_instance") or {}).get(key) or [] if v is not None]
            ax.plot([x] * len(each), each, marker, color=colour, alpha=0.3, ms=3, ls="none")


def selection(report: dict, path: Path) -> None:
    """One column per group, one panel per quantity against x (shared axis).

    F1 with its instance spread, each consistency score and the centre share
    with their 95% intervals, the leakage shares; the recommended point (gold
    band) and the points tied with it (grey bands) marked in every panel; the
    legend outside the data.
    """
    groups = report["groups"]
    x_key = report["x"]
    n_rows = len(SELECTION_PANELS)
    fig, axes = plt.subplots(
        n_rows, len(groups), figsize=(4.6 * len(groups), 2.0 * n_rows), squeeze=False, sharex="col"
    )
    for col, (label, g) in enumerate(groups.items()):
        rows = [r for r in g["rows"] if "missing" not in r]
        xs = np.array([r[x_key] for r in rows], dtype=float)
        rec = g["recommended"]
        for row, (key, ylabel) in enumerate(SELECTION_PANELS):
            ax = axes[row, col]
            if rec.get(x_key) is not None:
                ax.axvspan(
                    rec[x_key] - 0.35,
                    rec[x_key] + 0.35,
                    color="#f2c14e",
                    alpha=0.35,
                    lw=0,
                    label=f"recommended ({rec['criterion']})",
                )
            for i, x in enumerate(rec.get("tied") or []):
                ax.axvspan(
                    x - 0.35,
                    x + 0.35,
                    color="grey",
                    alpha=0.18,
                    lw=0,
                    label="tied with the recommended point" if i == 0 else None,
                )
            for m in g["missing"]:
                ax.axvline(m[x_key], color="black", ls="--", lw=0.8, alpha=0.5, label="missing point")
            if key == "f1":
                _f1_panel(ax, xs, rows)
            elif key == "leakage":
                for leak_key, leak_label, colour, style in LEAKAGE_LINES:
                    values = np.array(
                        [
                            np.nan if (r.get("leakage") or {}).get(leak_key) is None else r["leakage"][leak_key]
                            for r in rows
                        ],
                        dtype=float,
                    )
                    if not np.isnan(values).all():
                        ax.plot(xs, values, "o" + style, color=colour, label=leak_label)
            else:
                _errorbar_ci(ax, xs, rows, key, "#9467bd", "D", f"{ylabel} (95% interval)")
                if key == "centre_share":
                    ax.plot(xs, 1 / xs**2, ":", color="grey", label="centre share of a uniform map (1/p²)")
            if not ax.lines and not ax.collections:
                ax.text(
                    0.5,
                    0.5,
                    f"no {ylabel} values",
                    ha="center",
                    va="center",
                    fontsize=8,
                    transform=ax.transAxes,
                    color="grey",
                )
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0, col].set_title(label, fontsize=9)
        axes[-1, col].set_xlabel(x_key)
        ticks = sorted({*xs.tolist(), *(float(m[x_key]) for m in g["missing"])})
        for ax in axes[:, col]:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    handles: dict = {}
    for ax in axes.ravel():
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    fig.legend(
        handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=7, frameon=False
    )
    incomplete = "" if report.get("complete", True) else " — INCOMPLETE: missing points"
    fig.suptitle(f"Selection by {report['criterion']}{incomplete}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def radial_profile(result: dict, class_names: Sequence[str], path: Path, title: str) -> None:
    """Share of the positive attribution per Chebyshev ring (0 = the centre pixel), per class and overall.

    `result` is metrics/consistency.json's content; the dotted line is what a
    uniform map would put on each ring.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    overall = result.get("radial_profile")
    if not overall:
        ax.text(0.5, 0.5, "no ring masses", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        _save(fig, path)
        return
    rings = np.arange(len(overall))
    for name, colour in zip(class_names, class_colours(len(class_names))):
        values = (result["per_class"].get(name) or {}).get("radial_profile")
        if values:
            ax.plot(
                rings, [np.nan if v is None else v for v in values], "o-", color=colour, lw=1, alpha=0.7, label=name
            )
    ci = np.array([c or [np.nan, np.nan] for c in result["radial_profile_ci"]], dtype=float)
    values = np.array(overall, dtype=float)
    ax.errorbar(
        rings,
        values,
        yerr=np.nan_to_num(np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))),
        fmt="s-",
        color="black",
        lw=2,
        capsize=3,
        label="all classes (95% CI)",
    )
    p = 2 * len(overall) - 1
    uniform = [1 / p**2] + [8 * r / p**2 for r in rings[1:]]
    ax.plot(rings, uniform, ":", color="grey", label="uniform map")
    ax.set(
        xlabel="Chebyshev ring (0 = centre pixel)",
        ylabel="share of positive attribution",
        title=title,
        xticks=rings,
        ylim=(0, None),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)


def class_colours_rgb(n: int) -> list[tuple[int, int, int]]:
    """class_colours as 0-255 integer RGB, for a GeoTIFF's colour table."""
    from matplotlib.colors import to_rgb

    return [tuple(int(round(255 * v)) for v in to_rgb(c)) for c in class_colours(n)]


def crop_map(codes: np.ndarray, class_names: Sequence[str], pixel_m: float | None, path: Path, title: str) -> None:
    """A map's quick-look: codes uint8 [H, W] (0 = not classified, white; k = class k - 1), a legend of the crop
    names with their share of the classified pixels, and a km scale bar when the map is georeferenced
    (`pixel_m`: metres per pixel of `codes`; None = the pixel grid, no scale)."""
    k = len(class_names)
    height, width = codes.shape
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * height / width))
    ax.imshow(codes, cmap=ListedColormap(["#ffffff"] + class_colours(k)), vmin=0, vmax=k, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    counts = np.bincount(codes.ravel(), minlength=k + 1)[1:]
    shares = counts / max(1, counts.sum())
    handles = [Patch(color=c, label=f"{n} ({s:.0%})") for c, n, s in zip(class_colours(k), class_names, shares)]
    ax.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(k, 3), frameon=False, fontsize=9
    )
    if pixel_m is not None:
        _scale_bar(ax, pixel_m, width, height)
    ax.set_title(title + ("" if pixel_m is not None else " (pixel grid: not georeferenced)"), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight", format="png")  # the path may be a staging name
    plt.close(fig)


def _scale_bar(ax, pixel_m: float, width: int, height: int) -> None:
    """A black-and-white bar of a round length in km, about a fifth of the map's width, lower left."""
    target_km = width * pixel_m / 5000
    lengths = [n * 10.0**e for e in range(-2, 4) for n in (1, 2, 5)]
    km = max([x for x in lengths if x <= target_km] or [lengths[0]])
    bar_px = km * 1000 / pixel_m
    x0, y0 = 0.04 * width, 0.95 * height
    thickness = max(1.0, 0.012 * height)
    for i in range(2):
        ax.add_patch(
            plt.Rectangle(
                (x0 + i * bar_px / 2, y0 - thickness),
                bar_px / 2,
                thickness,
                facecolor="k" if i == 0 else "w",
                edgecolor="k",
                linewidth=0.8,
            )
        )
    label = f"{km:g} km" if km >= 1 else f"{km * 1000:g} m"
    ax.text(
        x0 + bar_px / 2,
        y0 - 1.8 * thickness,
        label,
        ha="center",
        va="bottom",
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1},
    )
