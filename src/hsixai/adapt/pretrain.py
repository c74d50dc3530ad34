"""`adapt_pretrain` stage: one source segmenter S per pair and seed, cross-entropy on the source labels.

Adam, balanced class weights, whole source scene per step (adapt.tile 0) or a
batch of random tiles; early stopping on the source validation split's macro
F1 (each S keeps its best state). Outputs:
data/adapt/source_models/<pair>/source_<seed>.pt, metrics/adapt_pretrain.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import tracking
from ..config import Params
from ..io import staged_outputs, write_json
from ..metrics import balanced_class_weights, f1_macro
from ..paths import Paths
from .common import (
    EXPERIMENT,
    Prepared,
    device_of,
    load_prepared,
    random_tile,
    run_jobs,
    save_segmenter,
    seeds,
    segmenter_from_arrays,
    state_arrays,
)
from .models import Segmenter

# With tiles, a step sees a batch of this many (BatchNorm needs more than one small tile's statistics).
PRETRAIN_TILES = 4
# Validation runs the whole source scene, which costs more than a tile step: check every few steps.
EVAL_EVERY = 5


def masked_f1(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Macro F1 of `net` (eval mode) on the labelled pixels of `labels` [H, W]."""
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1)[0]
    keep = labels >= 0
    return f1_macro(labels[keep].cpu().numpy(), pred[keep].cpu().numpy(), n_classes)


def pretrain(prep: Prepared, params: Params, seed: int, device: torch.device) -> tuple[Segmenter, dict]:
    """S trained on prep.source_train, best state on prep.source_val."""
    cfg, k = params.adapt, params.n_classes
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 3])
    net = Segmenter(prep.n_bands, k, feature_map=cfg.feature_map).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.pretrain_lr)
    labels = prep.source_train
    weights = torch.as_tensor(
        balanced_class_weights(labels[labels >= 0].cpu().numpy(), k), dtype=torch.float32, device=device
    )
    best, best_state, best_step, history = -1.0, None, 0, []
    n_tiles = PRETRAIN_TILES if cfg.tile else 1
    step = 0
    for step in range(1, cfg.pretrain_steps + 1):
        windows = [random_tile(cfg.tile, tuple(labels.shape), rng) for _ in range(n_tiles)]
        x = torch.cat([prep.source[..., ys, xs] for ys, xs in windows])
        y = torch.stack([labels[ys, xs] for ys, xs in windows])
        if (y >= 0).any():  # tiles may miss every labelled pixel
            net.train()
            loss = F.cross_entropy(net(x), y, weight=weights, ignore_index=-1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
        if step % EVAL_EVERY and step != cfg.pretrain_steps:
            continue
        f1 = masked_f1(net, prep.source, prep.source_val, k)
        if f1 > best:
            best, best_step = f1, step
            best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
        elif step - best_step >= cfg.pretrain_patience:
            break
    net.load_state_dict(best_state)
    return net.eval(), {
        "seed": seed,
        "f1_macro_val": best,
        "best_step": best_step,
        "steps": step,
        "final_loss": history[-1] if history else None,
    }


@dataclass(frozen=True)
class PretrainJob:
    """S of one pair and seed: one job of run_jobs."""

    params: Params
    paths: Paths
    pair: str
    seed: int
    device: str


def pretrain_seed(job: PretrainJob) -> tuple[dict[str, np.ndarray], dict, int, float]:
    """S's state, its record, the pair's band count and the seconds it took."""
    device = torch.device(job.device)
    prep = load_prepared(job.paths.adapt_prepared_files(job.pair), job.pair, device)
    start = time.perf_counter()
    net, record = pretrain(prep, job.params, job.seed, device)
    return state_arrays(net), record, prep.n_bands, time.perf_counter() - start


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt_pretrain.json's content."""
    device = device_of(params)
    jobs = [
        PretrainJob(params, paths, pair, seed, str(device)) for pair in params.adapt.pairs for seed in seeds(params)
    ]
    out_records: dict[str, list[dict]] = {}
    nets, seconds = [], []
    for job, (state, record, n_bands, took) in zip(
        jobs, run_jobs(pretrain_seed, jobs, params.adapt.workers, device), strict=True
    ):
        seconds.append(took)
        out_records.setdefault(job.pair, []).append(record)
        nets.append((job.pair, state, record, n_bands))
        if progress:
            print(
                f"adapt_pretrain: {job.pair} seed {job.seed}: source val F1 {record['f1_macro_val']:.3f} "
                f"(step {record['best_step']} of {record['steps']}, {took:.1f} s)",
                flush=True,
            )
    # Results only in the DVC metrics file: wall times differ run to run, so they go to MLflow.
    summary = {
        pair: {"f1_macro_val": float(np.mean([r["f1_macro_val"] for r in records])), "per_seed": records}
        for pair, records in out_records.items()
    }
    with staged_outputs(paths.adapt_source_models, files=(paths.metrics("adapt_pretrain"),)) as (out, metrics):
        for pair, state, record, n_bands in nets:
            meta = {
                "n_bands": n_bands,
                "n_classes": params.n_classes,
                "seed": record["seed"],
                "pair": pair,
                "feature_map": params.adapt.feature_map,
                "f1_macro_val": record["f1_macro_val"],
            }
            save_segmenter(
                paths.adapt_source_checkpoint(pair, record["seed"], out), segmenter_from_arrays(state, meta), meta
            )
        write_json(metrics, summary)
    with tracking.stage_run("adapt_pretrain", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_inputs([paths.adapt_prepared], "training")
        mlrun.log_params(
            {
                f"adapt.{k}": getattr(params.adapt, k)
                for k in ("pairs", "pretrain_steps", "pretrain_patience", "pretrain_lr", "tile", "seeds", "feature_map")
            }
        )
        mlrun.log_metrics({f"{pair}.source_f1_macro_val": s["f1_macro_val"] for pair, s in summary.items()}, to="both")
        mlrun.log_metrics({"pretrain_time_s": sum(seconds)}, to="both")
        mlrun.log_output(paths.adapt_source_models)
    return summary
