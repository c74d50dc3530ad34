"""`evaluate` stage: every trained instance on the test mask, and a classification map of the scene.

Outputs: metrics/evaluate.json (means and stds over instances, and per
instance), plots/evaluate/confusion.csv (true/predicted class per test pixel
of the best-dev instance, for `dvc plots`), figures/evaluate/ (confusion
matrix, classification map).
"""

from __future__ import annotations

import numpy as np
import torch

from . import plots, tracking
from .config import Params
from .data.patches import labelled_pixels, load_sampler
from .errors import HsixaiError
from .io import load_npy, staged_outputs, write_json
from .metrics import classification_metrics, mean_std
from .paths import Paths
from .train import Split, load_checkpoint, predict, prepared_meta, resolve_device

SUMMARY_KEYS = ("oa", "aa", "kappa", "f1_macro")


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/evaluate.json's content."""
    prepared_meta(paths, params)
    names = params.data.class_names
    device = resolve_device(params.train.device)
    models = [load_checkpoint(paths.checkpoint(i), device) for i in range(params.train.instances)]
    for _, meta in models:
        if (meta["model"], meta["patch_size"]) != (params.model, params.patch_size):
            raise HsixaiError(f"{paths.models_dir}: checkpoints are {meta['model']} p={meta['patch_size']}, "
                              f"params ask for {params.model} p={params.patch_size} (re-run train)")
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, params.patch_size, device)
    test_map = load_npy(paths.prepared_dir / "test_labels.npy", "test labels", ndim=2, kinds="i",
                        shape=(sampler.height, sampler.width))
    test = Split.from_labels(sampler, test_map)
    if len(test) == 0:
        raise HsixaiError(f"{paths.prepared_dir / 'test_labels.npy'}: the test mask has no labelled pixels")
    y_true = test.labels.cpu().numpy()

    per_instance = []
    for i, (model, meta) in enumerate(models):
        y_pred = predict(model, sampler, test.centres, params.train.eval_batch_size, progress,
                         f"evaluate #{i}").argmax(axis=1)
        per_instance.append({"seed": meta["seed"], "f1_macro_val": meta["f1_macro_val"],
                             **classification_metrics(y_true, y_pred, len(names)), "_pred": y_pred})
    best = int(np.argmax([r["f1_macro_val"] for r in per_instance]))  # chosen on dev, never on test

    summary: dict = {}
    for key in SUMMARY_KEYS:
        summary[key], summary[f"{key}_std"] = mean_std([r[key] for r in per_instance])
    f1_classes = np.array([r["f1_per_class"] for r in per_instance])
    summary["f1_per_class"] = dict(zip(names, f1_classes.mean(axis=0).tolist()))
    summary["best_instance"] = best
    summary["n_test"] = len(test)
    summary["per_instance"] = [{k: v for k, v in r.items() if k != "_pred"} for r in per_instance]

    stride = params.evaluate.map_stride
    scene_map = _scene_map(models[best][0], sampler, params, progress)
    best_pred = per_instance[best]["_pred"]
    with staged_outputs(paths.plots_dir("evaluate"), paths.figures_dir("evaluate"),
                        files=(paths.metrics("evaluate"),)) as (plot_dir, figs, metrics_file):
        rows = ["actual,predicted"] + [f"{names[t]},{names[p]}" for t, p in zip(y_true, best_pred)]
        (plot_dir / "confusion.csv").write_text("\n".join(rows) + "\n")
        plots.confusion(per_instance[best]["confusion"], names, figs / "confusion.png",
                        f"test, instance {best} (best dev F1)")
        every = f", one pixel per {stride} x {stride} block" if stride > 1 else ""
        plots.classification_map(scene_map, test_map[::stride, ::stride], names, figs / "classification_map.png",
                                  f"{params.model} p={params.patch_size}, instance {best}{every}")
        write_json(metrics_file, summary)

    with tracking.stage_run("evaluate", params, paths) as mlrun:
        mlrun.log_params({"model": params.model, "patch_size": params.patch_size, "n_test": len(test)})
        mlrun.log_metrics({k: summary[k] for k in SUMMARY_KEYS})
        mlrun.log_metrics({f"f1_test.{n}": v for n, v in summary["f1_per_class"].items()})
        mlrun.log_metrics({"f1_macro_test": summary["f1_macro"], "oa_test": summary["oa"],
                           "kappa_test": summary["kappa"]}, parent=True)
        for name in ("confusion.png", "classification_map.png"):
            mlrun.log_figure(paths.figures_dir("evaluate") / name)
        mlrun.log_output(paths.metrics("evaluate"))
    return summary


def _scene_map(model: torch.nn.Module, sampler, params: Params, progress: bool) -> np.ndarray:
    """The predicted class of every `evaluate.map_stride`-th pixel per row and column [ceil(H/s), ceil(W/s)]."""
    stride = params.evaluate.map_stride
    grid = np.zeros((sampler.height, sampler.width), dtype=np.int8)[::stride, ::stride]
    rows, cols, _ = labelled_pixels(grid)
    logits = predict(model, sampler, sampler.centres(rows * stride, cols * stride), params.train.eval_batch_size,
                     progress, "evaluate: scene map")
    return logits.argmax(axis=1).reshape(grid.shape).astype(np.int8)
