"""`adapt_evaluate` stage: the ablation on the target's test mask, and the target classification maps.

For every seed: the source-only S and the T of every arm of the `adapt`
stage, argmax of the logits over the whole target scene, scored on the fixed
target test mask. Outputs: metrics/adapt.json (per arm: mean and std over seeds
of OA, AA, kappa, macro F1 and mean IoU, and per seed), figures/adapt/maps.png.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import plots, tracking
from ..config import Params
from ..metrics import classification_metrics, mean_iou, mean_std
from ..io import staged_outputs, write_json
from ..paths import Paths
from .adversarial import ARMS
from .data import load_prepared
from .models import load_segmenter
from .pretrain import EXPERIMENT, device_of, seeds

ALL_ARMS = ("source_only", *ARMS)
KEYS = ("oa", "aa", "kappa", "f1_macro", "miou")
TITLES = {"source_only": "source-only S", "adabn": "AdaBN (S, target statistics)",
          "finetune": "T, few labels only", "binary": "binary D", "kplus1": "K+1 D", "kplus1_attention": "K+1 D + attention"}


def scores(pred: np.ndarray, test: np.ndarray, n_classes: int) -> dict:
    keep = test >= 0
    y_true, y_pred = test[keep], pred[keep]
    full = classification_metrics(y_true, y_pred, n_classes)
    return {**{k: full[k] for k in ("oa", "aa", "kappa", "f1_macro")}, "miou": mean_iou(y_true, y_pred, n_classes),
            "f1_per_class": full["f1_per_class"]}


def summarise(per_seed: dict[str, list[dict]]) -> dict:
    """Per arm, mean and std over seeds of each score, and the per-seed scores."""
    out = {}
    for arm, rows in per_seed.items():
        entry = {}
        for key in KEYS:
            entry[key], entry[f"{key}_std"] = mean_std([r[key] for r in rows])
        out[arm] = {**entry, "per_seed": rows}
    return out


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt.json's content."""
    device = device_of(params)
    prep = load_prepared(paths.adapt_prepared, device)
    test = prep.target_test.cpu().numpy()
    k = params.n_classes
    per_seed: dict[str, list[dict]] = {arm: [] for arm in ALL_ARMS}
    maps = {}
    for seed in seeds(params):
        for arm in ALL_ARMS:
            path = (paths.adapt_source_models / f"source_{seed}.pt" if arm == "source_only"
                    else paths.adapt_target_models / f"{arm}_{seed}.pt")
            net, _ = load_segmenter(path, device)
            with torch.no_grad():
                pred = net(prep.target).argmax(1)[0].cpu().numpy().astype(np.int8)
            per_seed[arm].append({"seed": seed, **scores(pred, test, k)})
            if seed == params.seed:
                maps[TITLES[arm]] = pred
    arms = summarise(per_seed)
    gain = np.array([r["f1_macro"] for r in per_seed["kplus1"]]) - \
        np.array([r["f1_macro"] for r in per_seed["source_only"]])
    spread = max(arms["kplus1"]["f1_macro_std"], arms["source_only"]["f1_macro_std"])
    summary = {
        "seeds": seeds(params), "n_test": int((test >= 0).sum()), "class_names": params.data.class_names,
        **{f"f1_macro_{arm}": arms[arm]["f1_macro"] for arm in ALL_ARMS},
        "kplus1_gain_f1_macro": float(gain.mean()),
        "kplus1_gain_exceeds_spread": bool(gain.mean() > spread),
        "arms": arms,
    }
    figure = paths.figures_dir("adapt") / "maps.png"
    with staged_outputs(paths.figures_dir("adapt"), files=(paths.metrics("adapt"),)) as (figs, metrics):
        plots.label_maps({"target test mask": test, **{t: m for t, m in maps.items()}}, params.data.class_names,
                         figs / "maps.png")
        write_json(metrics, summary)
    with tracking.stage_run("adapt_evaluate", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_metrics({f"{arm}.{key}": arms[arm][key] for arm in ALL_ARMS for key in KEYS})
        mlrun.log_metrics({f"target_f1_macro.{arm}": arms[arm]["f1_macro"] for arm in ALL_ARMS}, parent=True)
        mlrun.log_figure(figure)
        mlrun.log_output(paths.metrics("adapt"))
    return summary
