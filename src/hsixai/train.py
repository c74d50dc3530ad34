"""`train` stage: `train.instances` independently seeded models for one (model, patch_size) point.

Instance i uses seed `seed + i`. Each epoch: AdamW steps under a OneCycle
schedule on shuffled train batches, then the dev macro-F1; the best-dev
weights of each instance are kept. Under `torchrun` the stage trains with
DistributedDataParallel (gloo on CPU, NCCL on GPU): every rank draws the same
global batch and takes its own share of it, so the step matches one process
on the whole batch.

Outputs: models/instance_<i>.pt (state dict + metadata), metrics/train.json,
plots/train/instance_<i>.csv (per-epoch curves), figures/train/curves.png.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from . import plots, tracking
from .config import Params, TrainConfig
from .data.patches import PatchSampler, Split, load_sampler, load_split_labels, prepared_meta
from .errors import HsixaiError
from .io import staged_outputs, write_json
from .metrics import balanced_class_weights, f1_macro, mean_std
from .models import build_model
from .models.inference import predict
from .paths import Paths
from .runtime import resolve_device, save_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class InstanceResult:
    seed: int
    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    f1_macro_val: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def init_ranks(device: torch.device) -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # so NCCL collectives use this rank's GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def train_instance(
    params: Params,
    sampler: PatchSampler,
    train: Split,
    dev: Split,
    n_classes: int,
    instance: int,
    ranks: Ranks = Ranks(),
    progress: bool = True,
    on_epoch=None,
) -> InstanceResult:
    """Train one model instance with seed `params.seed + instance`; keep its best-dev weights."""
    cfg: TrainConfig = params.train
    seed = params.seed + instance
    torch.manual_seed(seed)
    model = build_model(params.model, sampler.n_bands, n_classes, params.patch_size, cfg.n_comps).to(sampler.device)
    net: nn.Module = model
    if ranks.world > 1:
        if sampler.device.type == "cuda":  # batch statistics over the global batch (SyncBatchNorm is CUDA-only)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    if cfg.max_batches_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_batches_per_epoch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg.max_lr_factor * cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    weights = torch.ones(n_classes)
    if cfg.class_weights:
        weights = torch.from_numpy(balanced_class_weights(train.labels.cpu().numpy(), n_classes)).float()
    weights = weights.to(sampler.device)
    shuffle = torch.Generator().manual_seed(seed)

    best_f1, best_epoch, best_state, history = -1.0, -1, None, []
    start = time.perf_counter()
    epochs = tqdm(
        range(1, cfg.epochs + 1),
        desc=f"train {params.model} p={params.patch_size} #{instance}",
        unit="epoch",
        disable=not (progress and ranks.main),
    )
    for epoch in epochs:
        # Shuffled each epoch, so a bounded epoch sees a new random subset of the batches.
        shuffled = itertools.islice(
            sampler.batches(train.centres, train.labels, cfg.batch_size, shuffle), steps_per_epoch
        )
        batches = tqdm(
            shuffled,
            total=steps_per_epoch,
            desc="batches",
            unit="batch",
            leave=False,
            disable=not (progress and ranks.main),
        )
        record = {
            "epoch": epoch,
            "loss": train_epoch(net, batches, optimiser, schedule, weights, ranks),
            "lr": schedule.get_last_lr()[0],
        }
        if ranks.main:
            pred = predict(model, sampler, dev.centres, cfg.eval_batch_size).argmax(axis=1)
            record["f1_macro_val"] = f1_macro(dev.labels.cpu().numpy(), pred, n_classes)
            if record["f1_macro_val"] > best_f1:
                best_f1, best_epoch = record["f1_macro_val"], epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            epochs.set_postfix(loss=f"{record['loss']:.3f}", f1_dev=f"{record['f1_macro_val']:.3f}")
            if on_epoch is not None:
                on_epoch(instance, record)
        history.append(record)
    return InstanceResult(seed, best_state or {}, best_epoch, best_f1, time.perf_counter() - start, history)


def train_epoch(
    net: nn.Module, batches, optimiser: torch.optim.Optimizer, schedule, weights: torch.Tensor, ranks: Ranks = Ranks()
) -> float:
    """One pass over `batches` of (patches, labels) with class-weighted cross-entropy; the epoch's mean loss.

    Under DDP each rank takes every world-th sample of the global batch and
    divides its summed loss by the global batch's weight total (times the world
    size, which DDP's gradient averaging undoes), so a step equals one process
    stepping on the whole batch, however the batch divides among ranks.
    """
    net.train()
    device = weights.device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # weighted loss sum, weight sum
    for x, y in batches:
        denominator = weights[y].sum()
        if ranks.world > 1:
            if len(y) < ranks.world:  # every rank needs a share; all ranks skip the same last batch
                schedule.step()
                continue
            x, y = x[ranks.rank :: ranks.world], y[ranks.rank :: ranks.world]
        optimiser.zero_grad(set_to_none=True)
        per_sample = nn.functional.cross_entropy(net(x), y, weight=weights, reduction="none")
        loss_share = per_sample.sum()
        (loss_share * ranks.world / denominator).backward()
        optimiser.step()
        schedule.step()
        # Accumulated on the device: no host synchronisation per step.
        totals += torch.stack([loss_share.detach().double(), denominator.double() / ranks.world])
    if ranks.world > 1:  # the epoch's loss over every rank's share, not rank 0's alone
        dist.all_reduce(totals)
    loss_sum, weight_sum = totals.tolist()
    return loss_sum / weight_sum if weight_sum else float("nan")


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/train.json's content (on rank 0)."""
    meta = prepared_meta(paths, params)
    device = resolve_device(params.train.device, "train.device")
    ranks = init_ranks(device)
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, params.patch_size, device)
    train_map, dev_map = load_split_labels(paths, (sampler.height, sampler.width))
    train, dev = Split.from_labels(sampler, train_map), Split.from_labels(sampler, dev_map)
    for name, split in (("train", train), ("dev", dev)):
        if len(split) == 0:
            raise HsixaiError(f"{paths.split_files().labels(name)}: the {name} split is empty (re-run split)")
    n_classes = len(params.data.class_names)
    bands = np.load(paths.prepared_files().bands).tolist()

    if not ranks.main:  # other ranks only contribute gradients
        for i in range(params.train.instances):
            train_instance(params, sampler, train, dev, n_classes, i, ranks, progress=False)
        dist.barrier()  # wait until rank 0 has written the outputs
        dist.destroy_process_group()
        return {}

    with tracking.stage_run("train", params, paths) as mlrun:
        mlrun.log_inputs([paths.prepared_dir, paths.split_dir], "training")
        mlrun.log_params(
            {
                k: v
                for k, v in tracking.flat_params(params).items()
                if k in ("seed", "model", "patch_size") or k.startswith("train.")
            }
        )
        mlrun.log_params({"device": str(device), "world_size": ranks.world, "n_train": len(train), "n_dev": len(dev)})

        def on_epoch(instance: int, record: dict) -> None:
            mlrun.log_metrics(
                {f"instance{instance}.{k}": v for k, v in record.items() if k != "epoch"}, step=record["epoch"]
            )

        results = [
            train_instance(params, sampler, train, dev, n_classes, i, ranks, progress, on_epoch)
            for i in range(params.train.instances)
        ]
        f1_mean, f1_std = mean_std([r.f1_macro_val for r in results])
        # Results only: wall times differ run to run, so they go to MLflow, not to this DVC metrics file.
        summary = {
            "f1_macro_val": f1_mean,
            "f1_macro_val_std": f1_std,
            "n_train": len(train),
            "n_dev": len(dev),
            "device": str(device),
            "world_size": ranks.world,
            "instances": [
                {"seed": r.seed, "best_epoch": r.best_epoch, "f1_macro_val": r.f1_macro_val} for r in results
            ],
        }
        with staged_outputs(
            paths.models_dir, paths.plots_dir("train"), paths.figures_dir("train"), files=(paths.metrics("train"),)
        ) as (models, curves, figs, metrics_file):
            for i, r in enumerate(results):
                save_checkpoint(
                    paths.checkpoint(i, models),
                    r.state_dict,
                    {
                        "model": params.model,
                        "patch_size": params.patch_size,
                        "n_bands": sampler.n_bands,
                        "bands": bands,
                        "n_classes": n_classes,
                        "class_names": meta["class_names"],
                        "n_comps": params.train.n_comps,
                        "seed": r.seed,
                        "instance": i,
                        "epoch": r.best_epoch,
                        "f1_macro_val": r.f1_macro_val,
                    },
                )
                _write_curve(paths.training_curve(i, curves), r.history)
            plots.training_curves(
                [r.history for r in results],
                paths.figures("train", figs).training_curves,
                f"{params.model}, patch {params.patch_size}",
            )
            write_json(metrics_file, summary)
        mlrun.log_metrics({f"instance{i}.train_time_s": r.seconds for i, r in enumerate(results)})
        mlrun.log_metrics({"f1_macro_val": f1_mean, "train_time_s": sum(r.seconds for r in results)}, to="both")
        mlrun.log_figure(paths.figures("train").training_curves)
        mlrun.log_output(paths.models_dir)
    if ranks.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _write_curve(path: Path, history: list[dict]) -> None:
    keys = ["epoch", "loss", "f1_macro_val", "lr"]
    lines = [",".join(keys)] + [",".join(f"{h[k]:.6g}" for k in keys) for h in history]
    path.write_text("\n".join(lines) + "\n")
