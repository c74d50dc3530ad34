"""`adapt_labels` stage: how many target labels the adversarial game needs to pay off, if any.

For every pair, seed and level of adapt.labels_sweep (labels per class, or
"all": every labelled target training pixel, the published UH setting), the
arms of adapt.labels_sweep_arms are trained from the same S as in the ablation
(training.py) and scored as trained and recalibrated (scoring.py). Labels are
nested per seed (common.few_labels): the 50 of a seed contain its 10. The
ablation's own level (adapt.target_labels_per_class) is read from its
checkpoints, not trained again. Per level: mean macro F1 of each arm and the
paired difference of the first arm against the second (e.g. kplus1_attention
minus finetune), with Student t intervals over seeds.

Output: metrics/adapt_labels.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from .. import tracking
from ..config import Params
from ..errors import HsixaiError
from ..io import staged_outputs, write_json
from ..paths import Paths
from .common import (
    EXPERIMENT,
    device_of,
    few_labels,
    labels_tag,
    load_prepared,
    load_segmenter,
    run_jobs,
    seeds,
)
from .scoring import INTERVAL, VARIANTS, paired_interval, score_segmenter
from .training import train_arm


def levels(params: Params) -> list[int | str]:
    """The ablation's level first, then the sweep's (without repeating it)."""
    main = params.adapt.target_labels_per_class
    return [main, *(v for v in params.adapt.labels_sweep if v != main)]


@dataclass(frozen=True)
class LevelJob:
    """The sweep's arms at one labels level for one pair and seed: one job of run_jobs."""

    params: Params
    paths: Paths
    pair: str
    level: int | str
    seed: int
    device: str


def train_level(job: LevelJob) -> dict[str, dict]:
    """arm -> {seed, labelled_pixels, macro F1 as trained and recalibrated[, iterations, stopped_by_rule]}.

    At the ablation's own level the adapt stage's checkpoint is scored (its
    iterations come from metrics/adapt_train.json, in run); other levels train the arm.
    """
    cfg, device = job.params.adapt, torch.device(job.device)
    prep = load_prepared(job.paths.adapt_prepared_files(job.pair), job.pair, device)
    pool = prep.target_pool.cpu().numpy().astype(np.int8)
    few = torch.from_numpy(few_labels(pool, job.level, job.seed)).long().to(device)
    source, _ = load_segmenter(job.paths.adapt_source_checkpoint(job.pair, job.seed), device)
    rows = {}
    for arm in cfg.labels_sweep_arms:
        if job.level == cfg.target_labels_per_class:
            net, _ = load_segmenter(job.paths.adapt_target_checkpoint(job.pair, arm, job.seed), device)
            record = {}
        else:
            net, run_record, _ = train_arm(source, arm, cfg, job.params.n_classes, job.seed, prep, few)
            record = {"iterations": run_record.iterations, "stopped_by_rule": run_record.stopped_by_rule}
        scored = score_segmenter(net, prep, job.params.n_classes, cfg.tile)
        rows[arm] = {
            "seed": job.seed,
            "labelled_pixels": int((few >= 0).sum()),
            **record,
            **{v: scored.target[v]["f1_macro"] for v in VARIANTS},
        }
    return rows


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt_labels.json's content."""
    cfg, device = params.adapt, device_of(params)
    arms = list(cfg.labels_sweep_arms)
    missing = [a for a in arms if a not in cfg.arms]
    if missing:
        raise HsixaiError(
            f"params: adapt.labels_sweep_arms: expected arms of adapt.arms (their checkpoints give the "
            f"level adapt.target_labels_per_class), found {missing} not in {cfg.arms}"
        )
    train_path = paths.metrics("adapt_train")
    if not train_path.is_file():
        raise HsixaiError(f"{train_path}: not found (run the adapt stage first)")
    main_runs = json.loads(train_path.read_text())
    main_level = {  # read before any training: a missing run is an error now, not after the sweep
        (pair, arm, seed): _main_run(main_runs, pair, arm, seed, train_path)
        for pair in cfg.pairs
        for arm in arms
        for seed in seeds(params)
    }
    jobs = [
        LevelJob(params, paths, pair, level, seed, str(device))
        for pair in cfg.pairs
        for level in levels(params)
        for seed in seeds(params)
    ]
    rows: dict[str, dict[str, dict[str, list[dict]]]] = {}  # pair -> level tag -> arm -> per-seed rows
    for job, job_rows in zip(jobs, run_jobs(train_level, jobs, cfg.workers, device), strict=True):
        for arm, row in job_rows.items():
            if job.level == cfg.target_labels_per_class:
                row.update(main_level[job.pair, arm, job.seed])
            rows.setdefault(job.pair, {}).setdefault(labels_tag(job.level), {}).setdefault(arm, []).append(row)
            if progress:
                print(
                    f"adapt_labels: {job.pair} labels {job.level} seed {job.seed} {arm}: macro F1 "
                    f"{row['as_trained']:.3f} ({row['iterations']} iterations)",
                    flush=True,
                )
    out = {pair: {tag: _level_summary(by_arm, arms) for tag, by_arm in table.items()} for pair, table in rows.items()}
    summary = {
        "seeds": seeds(params),
        "arms": arms,
        "interval": INTERVAL,
        "comparison": f"{arms[-1]} minus {arms[0]}" if len(arms) > 1 else None,
        "pairs": out,
    }
    with staged_outputs(files=(paths.metrics("adapt_labels"),)) as (metrics,):
        write_json(metrics, summary)
    with tracking.stage_run("adapt_labels", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_inputs([paths.adapt_prepared], "training")
        mlrun.log_metrics(
            {
                f"{pair}.labels_{level}.{arm}.f1_macro": entry["arms"][arm]["as_trained"]
                for pair, table in out.items()
                for level, entry in table.items()
                for arm in arms
            }
        )
        mlrun.log_output(paths.metrics("adapt_labels"))
    return summary


def _main_run(main_runs: dict, pair: str, arm: str, seed: int, path) -> dict:
    for r in main_runs.get(pair, {}).get("runs", []):
        if r["arm"] == arm and r["seed"] == seed:
            return {"iterations": r["iterations"], "stopped_by_rule": r["stopped_by_rule"]}
    raise HsixaiError(f"{path}: no run of {arm}, seed {seed}, pair {pair} (re-run the adapt stage)")


def _level_summary(rows: dict[str, list[dict]], arms: list[str]) -> dict:
    entry = {"labelled_pixels": rows[arms[0]][0]["labelled_pixels"], "arms": {}}
    for arm in arms:
        entry["arms"][arm] = {
            **{v: float(np.mean([r[v] for r in rows[arm]])) for v in VARIANTS},
            **{f"{v}_std": float(np.std([r[v] for r in rows[arm]])) for v in VARIANTS},
            "hit_cap": sum(not r["stopped_by_rule"] for r in rows[arm]),
            "iterations": [r["iterations"] for r in rows[arm]],
            "per_seed": rows[arm],
        }
    if len(arms) > 1:
        first, last = rows[arms[0]], rows[arms[-1]]
        entry["difference"] = {v: paired_interval([r[v] for r in last], [r[v] for r in first]) for v in VARIANTS}
    return entry
