"""`adapt_evaluate` stage: the ablation on each pair's target test mask, paired by seed, and its figures.

For every pair and seed: the source-only S and the T of every arm of the
`adapt` stage, each scored as trained and after whole-target BatchNorm
recalibration (scoring.py), on the target test mask and on the source's own
test pixels (for the shadow pair: inside and outside the shadow). Per arm:
mean and std over seeds, and paired differences against `source_only` and
`adabn` (and kplus1_attention against finetune) with Student t intervals over
seeds; iterations run and whether the stopping rule fired; for
kplus1_attention the gate's mean inside and outside the target region.

Outputs: metrics/adapt.json, figures/adapt/maps_<pair>.png, losses_<pair>.png, gate_<pair>.png.
"""

from __future__ import annotations

import json

import numpy as np

from .. import plots, tracking
from ..config import Params
from ..errors import HsixaiError
from ..io import load_npy, staged_outputs, write_json
from ..paths import Paths
from . import figures
from .common import EXPERIMENT, device_of, evaluated_arms, load_prepared, load_segmenter, seeds
from .scoring import INTERVAL, KEYS, VARIANTS, paired_interval, score_segmenter, summarise

TITLES = {
    "source_only": "source-only S",
    "adabn": "AdaBN (S, target statistics)",
    "finetune": "T, few labels only",
    "binary": "binary D",
    "kplus1": "K+1 D",
    "kplus1_attention": "K+1 D + gate",
}
# Paired comparisons reported for every arm, and one more: does the game beat plain fine-tuning?
REFERENCES = ("source_only", "adabn")


def arm_summary(rows: list[dict]) -> dict:
    """Per variant, mean and std over seeds of each score on the target test, and macro F1 on the source test."""
    out = {}
    for variant in VARIANTS:
        target = summarise([r[variant]["target"] for r in rows])
        source_f1 = [r[variant]["source"]["f1_macro"] for r in rows]
        out[variant] = {
            **target,
            "source_f1_macro": float(np.mean(source_f1)),
            "source_f1_macro_std": float(np.std(source_f1)),
        }
    return out


def comparisons(per_seed: dict[str, list[dict]], arm: str, reference: str) -> dict:
    """Paired differences of `arm` minus `reference` (the reference as it is: as trained), per variant of `arm`."""
    ref = [r["as_trained"]["target"]["f1_macro"] for r in per_seed[reference]]
    return {
        variant: paired_interval([r[variant]["target"]["f1_macro"] for r in per_seed[arm]], ref) for variant in VARIANTS
    }


def gate_response(paths: Paths, pair: str, region: np.ndarray, seed_list: list[int]) -> dict | None:
    """The kplus1_attention gate's mean inside and outside the target region, per seed and paired over seeds."""
    maps = []
    for seed in seed_list:
        path = paths.adapt_gate_map(pair, seed)
        if not path.is_file():
            raise HsixaiError(f"{path}: gate map not found (re-run the adapt stage)")
        maps.append(np.asarray(load_npy(path, "gate map", ndim=2, kinds="f", shape=region.shape)))
    inside = [float(m[region == 1].mean()) for m in maps]
    has_outside = bool((region == 0).any())
    outside = [float(m[region == 0].mean()) for m in maps] if has_outside else None
    out = {
        "inside": float(np.mean(inside)),
        "outside": float(np.mean(outside)) if has_outside else None,
        "per_seed_inside": inside,
        "per_seed_outside": outside,
        "spread": float(np.mean([m.std() for m in maps])),
    }
    if has_outside:
        out["inside_minus_outside"] = paired_interval(inside, outside)
    return out


def evaluate_pair(params: Params, paths: Paths, pair: str, train_runs: list[dict], device) -> tuple[dict, dict]:
    """One pair's entry of metrics/adapt.json, and the figures' inputs."""
    prep = load_prepared(paths.adapt_prepared_files(pair), pair, device)
    k, seed_list, all_arms = params.n_classes, seeds(params), evaluated_arms(params)
    per_seed: dict[str, list[dict]] = {arm: [] for arm in all_arms}
    maps = {}
    for seed in seed_list:
        for arm in all_arms:
            path = (
                paths.adapt_source_checkpoint(pair, seed)
                if arm == "source_only"
                else paths.adapt_target_checkpoint(pair, arm, seed)
            )
            net, _ = load_segmenter(path, device)
            scored = score_segmenter(net, prep, k, params.adapt.tile)
            per_seed[arm].append(
                {"seed": seed, **{v: {"target": scored.target[v], "source": scored.source[v]} for v in VARIANTS}}
            )
            if seed == params.seed:
                maps[TITLES[arm]] = scored.maps["as_trained"]
    runs = {(r["arm"], r["seed"]): r for r in train_runs}
    arms = {}
    for arm in all_arms:
        entry = {
            **arm_summary(per_seed[arm]),
            **{f"vs_{ref}": comparisons(per_seed, arm, ref) for ref in REFERENCES if ref != arm and ref in all_arms},
        }
        if arm not in ("source_only", "adabn"):
            trained = [runs.get((arm, s)) for s in seed_list]
            if any(r is None for r in trained):
                raise HsixaiError(
                    f"{paths.metrics('adapt_train')}: no run of {arm} for every seed of {pair} (re-run the adapt stage)"
                )
            entry["iterations"] = [r["iterations"] for r in trained]
            entry["stopped_by_rule"] = [r["stopped_by_rule"] for r in trained]
            entry["hit_cap"] = sum(not r["stopped_by_rule"] for r in trained)
        entry["per_seed"] = per_seed[arm]
        arms[arm] = entry
    for arm in ("kplus1", "kplus1_attention"):
        if arm in arms and "finetune" in arms:
            arms[arm]["vs_finetune"] = comparisons(per_seed, arm, "finetune")
    if "kplus1" in arms and "kplus1_attention" in arms:
        arms["kplus1_attention"]["vs_kplus1"] = comparisons(per_seed, "kplus1_attention", "kplus1")
    region = prep.target_region.cpu().numpy().astype(np.int8)
    gated = "kplus1_attention" in arms
    gate = gate_response(paths, pair, region, seed_list) if gated else None
    result = {
        "n_test": int((prep.target_test >= 0).sum()),
        "n_source_test": int((prep.source_test >= 0).sum()),
        "one_scene": prep.one_scene,
        "f1_macro": {arm: arms[arm]["as_trained"]["f1_macro"] for arm in all_arms},
        "f1_macro_recalibrated": {arm: arms[arm]["recalibrated"]["f1_macro"] for arm in all_arms},
        "hit_cap": sum(a.get("hit_cap", 0) for a in arms.values()),
        "gate": gate,
        "arms": arms,
    }
    test_map, title = prep.target_test.cpu().numpy(), "target test mask"
    if prep.one_scene:  # the figure shows the whole scene's test pixels, the target region's and the source's
        test_map = np.where(region == 1, test_map, prep.source_test.cpu().numpy())
        title = "test pixels, target region and source"
    gate_map = np.load(paths.adapt_gate_map(pair, params.seed)) if gated else None
    return result, {"maps": {title: test_map, **maps}, "region": region, "gate_map": gate_map}


def stop_thresholds(params: Params) -> dict[str, float]:
    """The thresholds the stopping rule reads, by loss curve (adapt.stop_rule)."""
    cfg = params.adapt
    if cfg.stop_rule == "supervised_ce":
        return {"loss_supervised": cfg.stop_loss_supervised}
    return {"loss_d": cfg.stop_loss_d, "loss_t": cfg.stop_loss_t}


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt.json's content."""
    device = device_of(params)
    train_path = paths.metrics("adapt_train")
    if not train_path.is_file():
        raise HsixaiError(f"{train_path}: not found (run the adapt stage first)")
    train = json.loads(train_path.read_text())
    pairs, drawings = {}, {}
    for pair in params.adapt.pairs:
        if pair not in train:
            raise HsixaiError(f"{train_path}: no runs of pair '{pair}' (re-run the adapt stage)")
        pairs[pair], drawings[pair] = evaluate_pair(params, paths, pair, train[pair]["runs"], device)
        if progress:
            f1 = pairs[pair]["f1_macro"]
            print(f"adapt_evaluate: {pair}: " + ", ".join(f"{a} {v:.3f}" for a, v in f1.items()), flush=True)
    summary = {
        "seeds": seeds(params),
        "interval": INTERVAL,
        "class_names": params.data.class_names,
        "stop_rule": params.adapt.stop_rule,
        "hit_cap": sum(p["hit_cap"] for p in pairs.values()),
        "pairs": pairs,
    }
    fig_dir = paths.figures_dir("adapt")
    with staged_outputs(fig_dir, files=(paths.metrics("adapt"),)) as (figs, metrics):
        figure_files = paths.figures("adapt", figs)
        for pair, drawing in drawings.items():
            plots.label_maps(drawing["maps"], params.data.class_names, figure_files.adapt_label_maps(pair))
            runs = [r for r in train[pair]["runs"] if r["seed"] == params.seed and r["arm"] != "adabn"]
            figures.loss_curves(
                runs,
                stop_thresholds(params),
                figure_files.adapt_losses(pair),
                f"{pair}: mean losses per iteration, seed {params.seed}",
            )
            if drawing["gate_map"] is not None:
                gate = pairs[pair]["gate"]
                figures.gate_map(
                    drawing["gate_map"],
                    drawing["region"],
                    {
                        "inside": gate["per_seed_inside"][0],
                        "outside": gate["per_seed_outside"][0] if gate["per_seed_outside"] else None,
                    },
                    figure_files.adapt_gate(pair),
                    f"{pair}: kplus1_attention gate on the target, seed {params.seed}",
                )
        write_json(metrics, summary)
    with tracking.stage_run("adapt_evaluate", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_inputs([paths.adapt_prepared], "evaluation")
        for pair, result in pairs.items():
            mlrun.log_metrics(
                {
                    f"{pair}.{arm}.{variant}.{key}": result["arms"][arm][variant][key]
                    for arm in evaluated_arms(params)
                    for variant in VARIANTS
                    for key in KEYS
                }
            )
            mlrun.log_metrics({f"{pair}.target_f1_macro.{arm}": v for arm, v in result["f1_macro"].items()}, to="both")
        for figure in paths.figures("adapt").drawn():
            mlrun.log_figure(figure)
        mlrun.log_output(paths.metrics("adapt"))
    return summary
