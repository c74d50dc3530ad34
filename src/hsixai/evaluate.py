"""`evaluate` stage: every trained instance on the test mask, and a classification map of the scene.

Every score is computed twice: on the whole test mask (the user's, kept whole)
and on the leak-free test subset the split stage made (test pixels farther than
the split's buffer from every train pixel, the same pixels for every point of a
sweep; docs/leakage.md). Next to them, the leakage of this point: the share of
dev and test pixels whose patch holds a train pixel of their own class, or of
any class.

Outputs: metrics/evaluate.json (means and stds over instances, and per
instance), plots/evaluate/confusion.csv (true/predicted class per test pixel
of the best-dev instance, for `dvc plots`), figures/evaluate/ (confusion
matrix, classification map).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import plots, tracking
from .config import Params
from .data.patches import Split, labelled_pixels, load_sampler, load_split_labels, prepared_meta
from .errors import HsixaiError
from .io import load_npy, staged_outputs, write_json
from .leakage import patch_leakage
from .metrics import classification_metrics, mean_std
from .models.inference import load_classifier, predict
from .paths import Paths
from .runtime import resolve_device

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("oa", "aa", "kappa", "f1_macro")
LEAKFREE_KEYS = tuple(f"{k}_leakfree" for k in SUMMARY_KEYS)


@dataclass(frozen=True)
class InstanceResult:
    """One trained instance on the test mask.

    metrics: its entry in metrics/evaluate.json's "per_instance", keys in the order written: seed, f1_macro_val,
        the classification metrics on the whole test mask and the summary ones (with F1 per class) on the
        leak-free subset.
    predictions: int [n_test], the predicted class of each test pixel, in the order of the test split's centres.
    """

    metrics: dict
    predictions: np.ndarray


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/evaluate.json's content."""
    prepared_meta(paths, params)
    names = params.data.class_names
    device = resolve_device(params.train.device, "train.device")
    models = [load_classifier(paths.checkpoint(i), device) for i in range(params.train.instances)]
    for _, meta in models:
        if (meta["model"], meta["patch_size"]) != (params.model, params.patch_size):
            raise HsixaiError(
                f"{paths.models_dir}: checkpoints are {meta['model']} p={meta['patch_size']}, "
                f"params ask for {params.model} p={params.patch_size} (re-run train)"
            )
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, params.patch_size, device)
    test_map = load_npy(
        paths.prepared_files().test_labels, "test labels", ndim=2, kinds="i", shape=(sampler.height, sampler.width)
    )
    test = Split.from_labels(sampler, test_map)
    if len(test) == 0:
        raise HsixaiError(f"{paths.prepared_files().test_labels}: the test mask has no labelled pixels")
    y_true = test.labels.cpu().numpy()
    leakfree = load_leakfree(paths, test_map, names)
    test_rows, test_cols, _ = labelled_pixels(test_map)
    is_leakfree = leakfree["labels"][test_rows, test_cols] >= 0  # [n_test], in the order of test.centres
    leakage = leakage_shares(paths, test_map, params.patch_size, len(names))
    macro_classes = [names.index(n) for n in names if n not in leakfree["classes_too_few"]]
    covers_patch = params.patch_size // 2 <= leakfree["buffer"]
    if not covers_patch:
        log.warning(
            "patch_size=%d reaches %d px from its centre, beyond the split's buffer of %d px: the "
            "'leak-free' test pixels' patches may hold train pixels for this point (raise split.buffer, "
            "or sweep.patch_sizes for auto)",
            params.patch_size,
            params.patch_size // 2,
            leakfree["buffer"],
        )

    per_instance = []
    for i, (model, meta) in enumerate(models):
        y_pred = predict(model, sampler, test.centres, params.train.eval_batch_size, progress, f"evaluate #{i}").argmax(
            axis=1
        )
        lf = classification_metrics(y_true[is_leakfree], y_pred[is_leakfree], len(names), macro_classes)
        per_instance.append(
            InstanceResult(
                {
                    "seed": meta["seed"],
                    "f1_macro_val": meta["f1_macro_val"],
                    **classification_metrics(y_true, y_pred, len(names)),
                    **{f"{k}_leakfree": lf[k] for k in (*SUMMARY_KEYS, "f1_per_class")},
                },
                y_pred,
            )
        )
    instance_metrics = [r.metrics for r in per_instance]
    best = int(np.argmax([r["f1_macro_val"] for r in instance_metrics]))  # chosen on dev, never on test

    summary: dict = {}
    for key in SUMMARY_KEYS:
        summary[key], summary[f"{key}_std"] = mean_std([r[key] for r in instance_metrics])
    f1_classes = np.array([r["f1_per_class"] for r in instance_metrics])
    summary["f1_per_class"] = dict(zip(names, f1_classes.mean(axis=0).tolist()))
    summary["best_instance"] = best
    summary["n_test"] = len(test)
    for key in LEAKFREE_KEYS:
        summary[key], summary[f"{key}_std"] = mean_std([r[key] for r in instance_metrics])
    n_leakfree = leakfree["n_per_class"]
    f1_leakfree = np.array([r["f1_per_class_leakfree"] for r in instance_metrics]).mean(axis=0)
    # A class without leak-free pixels has no F1 there (not 0).
    summary["f1_per_class_leakfree"] = {n: (float(f) if n_leakfree[n] else None) for n, f in zip(names, f1_leakfree)}
    summary["n_test_leakfree"] = int(is_leakfree.sum())
    summary["n_test_leakfree_per_class"] = n_leakfree
    summary["leakfree_buffer"] = leakfree["buffer"]
    summary["leakfree_covers_patch"] = covers_patch
    summary["leakfree_min_pixels"] = leakfree["min_pixels"]
    summary["leakfree_classes_excluded"] = leakfree["classes_too_few"]  # from the leak-free AA and macro F1
    summary["leakage"] = leakage
    summary["per_instance"] = instance_metrics

    stride = params.evaluate.map_stride
    scene_map = _scene_map(models[best][0], sampler, params, progress)
    best_pred = per_instance[best].predictions
    with staged_outputs(
        paths.plots_dir("evaluate"), paths.figures_dir("evaluate"), files=(paths.metrics("evaluate"),)
    ) as (plot_dir, figs, metrics_file):
        rows = ["actual,predicted"] + [f"{names[t]},{names[p]}" for t, p in zip(y_true, best_pred)]
        figures = paths.figures("evaluate", figs)
        paths.confusion_table(plot_dir).write_text("\n".join(rows) + "\n")
        plots.confusion(
            per_instance[best].metrics["confusion"], names, figures.confusion, f"test, instance {best} (best dev F1)"
        )
        every = f", one pixel per {stride} x {stride} block" if stride > 1 else ""
        plots.classification_map(
            scene_map,
            test_map[::stride, ::stride],
            names,
            figures.classification_map,
            f"{params.model} p={params.patch_size}, instance {best}{every}",
        )
        write_json(metrics_file, summary)

    with tracking.stage_run("evaluate", params, paths) as mlrun:
        mlrun.log_inputs([paths.prepared_dir, paths.split_dir], "evaluation")
        mlrun.log_params(
            {
                "model": params.model,
                "patch_size": params.patch_size,
                "n_test": len(test),
                "n_test_leakfree": summary["n_test_leakfree"],
                "leakfree_buffer": leakfree["buffer"],
                "leakfree_covers_patch": covers_patch,
            }
        )
        mlrun.log_metrics({k: summary[k] for k in SUMMARY_KEYS})
        mlrun.log_metrics(_finite({k: summary[k] for k in LEAKFREE_KEYS}))
        mlrun.log_metrics({f"f1_test.{n}": v for n, v in summary["f1_per_class"].items()})
        mlrun.log_metrics(_finite({f"f1_test_leakfree.{n}": v for n, v in summary["f1_per_class_leakfree"].items()}))
        mlrun.log_metrics(_finite({f"leakage.{k}": v for k, v in summary["leakage"].items()}))
        mlrun.log_metrics(_finite(tracking.headline_metrics("evaluate", summary)), to="both")
        for figure in (paths.figures("evaluate").confusion, paths.figures("evaluate").classification_map):
            mlrun.log_figure(figure)
        mlrun.log_output(paths.metrics("evaluate"))
    return summary


def load_leakfree(paths: Paths, test_map: np.ndarray, names: list[str]) -> dict:
    """The split stage's leak-free test subset: its label map int [H, W] (-1 elsewhere), the buffer it was
    made with, its size per class and the classes with too few pixels for a macro score."""
    lf_path, info_path = paths.split_files().test_leakfree_labels, paths.split_files().leakfree
    if not info_path.is_file():
        raise HsixaiError(f"{info_path}: the leak-free test subset's description not found (re-run the split stage)")
    labels = load_npy(lf_path, "leak-free test labels", ndim=2, kinds="i", shape=test_map.shape)
    try:
        info = json.loads(info_path.read_text())
        out = {
            "labels": labels,
            "buffer": int(info["buffer"]),
            "min_pixels": int(info["min_leakfree_pixels"]),
            "n_per_class": {n: int(info["n_test_leakfree_per_class"][n]) for n in names},
            "classes_too_few": [str(n) for n in info["classes_too_few"]],
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise HsixaiError(
            f"{info_path}: not a valid leakfree.json of the split stage ({exc!r}); re-run split"
        ) from None
    in_subset = labels >= 0
    if (
        np.any(labels[in_subset] != test_map[in_subset])
        or list(out["n_per_class"].values()) != np.bincount(labels[in_subset], minlength=len(names)).tolist()
    ):
        raise HsixaiError(
            f"{lf_path}: the leak-free test subset does not match the test mask and {info_path.name} "
            f"(re-run the split stage)"
        )
    return out


def leakage_shares(paths: Paths, test_map: np.ndarray, patch_size: int, n_classes: int) -> dict[str, float | None]:
    """Share of (buffered) dev and of test pixels whose patch_size x patch_size patch holds a train pixel of
    their own class ("*_same_class") and of any class ("*_any_class")."""
    train, dev = load_split_labels(paths, test_map.shape)
    out = {}
    for name, targets in (("dev", dev), ("test", test_map)):
        shares = patch_leakage(train, targets, patch_size, n_classes)
        out.update({f"{name}_same_class": shares["same_class"], f"{name}_any_class": shares["any_class"]})
    return out


def _finite(values: dict) -> dict:
    """The entries that are numbers (MLflow metrics): NaN and None mean "undefined" and are not logged."""
    return {k: v for k, v in values.items() if v is not None and np.isfinite(v)}


def _scene_map(model: torch.nn.Module, sampler, params: Params, progress: bool) -> np.ndarray:
    """The predicted class of every `evaluate.map_stride`-th pixel per row and column [ceil(H/s), ceil(W/s)]."""
    stride = params.evaluate.map_stride
    grid = np.zeros((sampler.height, sampler.width), dtype=np.int8)[::stride, ::stride]
    rows, cols, _ = labelled_pixels(grid)
    logits = predict(
        model,
        sampler,
        sampler.centres(rows * stride, cols * stride),
        params.train.eval_batch_size,
        progress,
        "evaluate: scene map",
    )
    return logits.argmax(axis=1).reshape(grid.shape).astype(np.int8)
