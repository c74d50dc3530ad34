"""`adapt` stage: the target segmenter T of every ablation arm, pair and seed (the game: training.py).

Arms:
    adabn             no training: S with its BatchNorm statistics re-estimated on the whole target scene
    finetune          T on the few target labels alone (cross-entropy through the frozen classifier), the same
                      budget, T steps and stopping rule as the adversarial arms
    binary            D says source vs target; T makes its labelled target pixels look "source"
    kplus1            D says "source pixel of class k" (0..K-1) or "target pixel" (K); T makes each labelled
                      target pixel look like a source pixel of its own class
    kplus1_attention  kplus1 with the published attention gate on D's target logits

Outputs: data/adapt/target_models/<pair>/<arm>_<seed>.pt, gate_<seed>.npy (the
kplus1_attention gate over the whole target scene), metrics/adapt_train.json
(per pair: every run's per-iteration mean losses, iterations and whether the
stopping rule fired).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import tracking
from ..config import Params
from ..io import staged_outputs, write_json
from ..paths import Paths
from .common import (
    EXPERIMENT,
    arms,
    device_of,
    load_few,
    load_prepared,
    load_segmenter,
    run_jobs,
    save_segmenter,
    seeds,
    segmenter_from_arrays,
    state_arrays,
)
from .training import RunRecord, train_arm

LOGGED_PARAMS = (
    "pairs",
    "arms",
    "tile",
    "feature_map",
    "iterations",
    "d_steps",
    "t_steps",
    "d_lr",
    "t_lr",
    "d_target_pixels",
    "feature_attention",
    "target_batchnorm",
    "d_mode_in_t_steps",
    "stop_rule",
    "stop_loss_supervised",
    "stop_loss_d",
    "stop_loss_t",
    "stop_patience",
    "target_labels_per_class",
)


@dataclass(frozen=True)
class SeedJob:
    """Every arm of one pair and seed: one job of run_jobs (i: the seed's index among the ablation's seeds)."""

    params: Params
    paths: Paths
    pair: str
    i: int
    seed: int
    device: str


def train_seed(job: SeedJob) -> list[tuple[RunRecord, dict[str, np.ndarray], np.ndarray | None, dict]]:
    """Every arm of one pair and seed from its S: (run record, T's state, the gate map or None, S's meta) per arm."""
    params, paths, device = job.params, job.paths, torch.device(job.device)
    prep = load_prepared(paths.adapt_prepared_files(job.pair), job.pair, device)
    few = load_few(paths.adapt_few_labels(job.pair), params.adapt.seeds, tuple(prep.target.shape[-2:]), device)
    source, meta = load_segmenter(paths.adapt_source_checkpoint(job.pair, job.seed), device)
    out = []
    for arm in arms(params):
        net, record, gate = train_arm(source, arm, params.adapt, params.n_classes, job.seed, prep, few[job.i])
        out.append((record, state_arrays(net), None if gate is None else gate.cpu().numpy().astype(np.float32), meta))
    return out


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt_train.json's content."""
    device = device_of(params)
    jobs = [
        SeedJob(params, paths, pair, i, seed, str(device))
        for pair in params.adapt.pairs
        for i, seed in enumerate(seeds(params))
    ]
    records: dict[str, list[RunRecord]] = {}
    outputs = []  # (pair, record, T's state, gate, S's meta)
    for job, results in zip(jobs, run_jobs(train_seed, jobs, params.adapt.workers, device), strict=True):
        for record, state, gate, meta in results:
            records.setdefault(job.pair, []).append(record)
            outputs.append((job.pair, record, state, gate, meta))
            if progress and record.arm != "adabn":
                print(
                    f"adapt: {job.pair} seed {job.seed} {record.arm}: {record.iterations} iterations "
                    f"({'stopped by the rule' if record.stopped_by_rule else 'at the cap'}), "
                    f"{record.seconds / max(record.iterations, 1):.2f} s per iteration",
                    flush=True,
                )
    summary = {
        pair: {
            "runs": [_public(r) for r in rs],
            "hit_cap": sum(1 for r in rs if r.arm != "adabn" and not r.stopped_by_rule),
        }
        for pair, rs in records.items()
    }
    with staged_outputs(paths.adapt_target_models, files=(paths.metrics("adapt_train"),)) as (out, metrics):
        for pair, record, state, gate, meta in outputs:
            save_segmenter(
                paths.adapt_target_checkpoint(pair, record.arm, record.seed, out),
                segmenter_from_arrays(state, meta),
                {**meta, "arm": record.arm, "iterations": record.iterations},
            )
            if gate is not None:
                np.save(paths.adapt_gate_map(pair, record.seed, out), gate)
        write_json(metrics, summary)
    with tracking.stage_run("adapt", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_inputs([paths.adapt_prepared, paths.adapt_target_labels], "training")
        mlrun.log_params({f"adapt.{k}": getattr(params.adapt, k) for k in LOGGED_PARAMS})
        mlrun.log_curves(
            {
                f"{pair}.{r.arm}.seed{r.seed}.{key}": getattr(r, key)
                for pair, rs in records.items()
                for r in rs
                for key in ("loss_d", "loss_t", "loss_supervised")
            }
        )
        seconds = {
            f"{pair}.seconds_per_iteration.{arm}": float(
                np.mean([r.seconds / max(r.iterations, 1) for r in rs if r.arm == arm])
            )
            for pair, rs in records.items()
            for arm in arms(params)
            if arm != "adabn"
        }
        mlrun.log_metrics({**seconds, "adapt_time_s": sum(r.seconds for rs in records.values() for r in rs)})
        mlrun.log_output(paths.adapt_target_models)
    return summary


def _public(record: RunRecord) -> dict:
    """A run record for the DVC metrics file: everything but its wall time (that differs run to run: MLflow)."""
    out = asdict(record)
    out.pop("seconds")
    return out
