"""Scores of an adapted segmenter, as trained and after whole-target BatchNorm recalibration, and paired intervals.

Shared by the adapt_evaluate and adapt_labels stages. Every comparison between
arms is paired by seed (seed i gives both arms the same S and the same few
labels), and its interval is the Student t-interval over seeds of the per-seed
differences: mean +- t_{n-1, 0.975} * sd / sqrt(n). It assumes the per-seed
differences are roughly normal; tests/unit/test_adapt_scoring.py checks its
coverage by simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from ..metrics import classification_metrics, mean_iou, mean_std
from .common import Prepared, recalibrate

KEYS = ("oa", "aa", "kappa", "f1_macro", "miou")
VARIANTS = ("as_trained", "recalibrated")
LEVEL = 0.95
INTERVAL = (
    "Student t 95% interval over seeds of the paired per-seed difference "
    "(mean +- t(n-1, 0.975) sd / sqrt(n)); coverage checked by simulation in tests/unit/test_adapt_scoring.py"
)


def scores(pred: np.ndarray, test: np.ndarray, n_classes: int) -> dict:
    """OA, AA, kappa, macro F1, mean IoU and per-class F1 of `pred` [H, W] on the labelled pixels of `test` [H, W]."""
    keep = test >= 0
    y_true, y_pred = test[keep], pred[keep]
    full = classification_metrics(y_true, y_pred, n_classes)
    return {
        **{k: full[k] for k in ("oa", "aa", "kappa", "f1_macro")},
        "miou": mean_iou(y_true, y_pred, n_classes),
        "f1_per_class": full["f1_per_class"],
    }


def predict(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Argmax class map int8 [H, W] of `net` (eval mode) over the whole scene x [1, bands, H, W]."""
    net.eval()
    with torch.no_grad():
        return net(x).argmax(1)[0].cpu().numpy().astype(np.int8)


@dataclass
class Scored:
    """One segmenter's scores and maps: per variant, on the target test and on the source's own test pixels."""

    target: dict[str, dict]  # variant -> scores on the target test mask
    source: dict[str, dict]  # variant -> scores on the source test mask (for one scene: the sunlit test pixels)
    maps: dict[str, np.ndarray]  # variant -> target class map [Ht, Wt]


def score_segmenter(net: torch.nn.Module, prep: Prepared, n_classes: int, tile: int = 0) -> Scored:
    """`net` as trained (its own running statistics) and recalibrated on the whole target scene."""
    target_test = prep.target_test.cpu().numpy()
    source_test = prep.source_test.cpu().numpy()
    variants = {"as_trained": net, "recalibrated": recalibrate(net, prep.target, tile)}
    target, source, maps = {}, {}, {}
    for name, model in variants.items():
        maps[name] = predict(model, prep.target)
        source_map = maps[name] if prep.one_scene else predict(model, prep.source)
        target[name] = scores(maps[name], target_test, n_classes)
        source[name] = scores(source_map, source_test, n_classes)
    return Scored(target, source, maps)


def paired_interval(a: list[float] | np.ndarray, b: list[float] | np.ndarray, level: float = LEVEL) -> dict:
    """Mean of a - b over paired seeds with its Student t interval; no interval from fewer than 2 seeds."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def summarise(rows: list[dict]) -> dict:
    """Mean and population std over seeds of each score in KEYS."""
    out = {}
    for key in KEYS:
        out[key], out[f"{key}_std"] = mean_std([r[key] for r in rows])
    return out
