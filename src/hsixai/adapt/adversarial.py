"""`adapt` stage: the target segmenter T of every ablation arm and seed.

T starts as a copy of the frozen source segmenter S with its final 1x1
classifier frozen. With `adapt.target_batchnorm: target` its BatchNorm layers
normalise with target batch statistics while adapting and keep running target
statistics for inference; with `source` they stay S's, so only weights move. One iteration = `d_steps` discriminator steps,
then `t_steps` segmenter steps. Arms:

    adabn             no training: S with its BatchNorm statistics re-estimated on the whole target scene
                      (what target statistics alone are worth, the reference for every trained arm)
    finetune          T on the few target labels alone (cross-entropy through the frozen classifier)
    binary            D says source vs target; T makes its target pixels look "source"
    kplus1            D says "source pixel of class k" (0..K-1) or "target pixel" (K); T makes each labelled
                      target pixel look like a source pixel of its own class
    kplus1_attention  kplus1 with the attention gate on D's target logits

Outputs: data/adapt/target_models/<arm>_<seed>.pt, metrics/adapt_train.json.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import tracking
from ..config import AdaptConfig, Params
from ..io import staged_outputs, write_json
from ..paths import Paths
from .data import load_prepared, random_tile
from .models import AttentionGate, Discriminator, Segmenter, freeze, load_segmenter, save_segmenter
from .pretrain import EXPERIMENT, device_of, seeds

ARMS = ("adabn", "finetune", "binary", "kplus1", "kplus1_attention")


def batchnorm_on_target(net: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm layers in training mode: batch statistics, running statistics updated; the rest unchanged."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
    return net


def adabn(source: Segmenter, x_t: torch.Tensor) -> Segmenter:
    """S with every BatchNorm's running statistics replaced by those of one pass over the target scene."""
    net = copy.deepcopy(source)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: exactly this pass's statistics
    with torch.no_grad():
        batchnorm_on_target(net)(x_t)
    return net.eval()


def masked(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`labels` where `keep`, -1 (ignored by every loss) elsewhere."""
    return torch.where(keep, labels, torch.full_like(labels, -1))


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [1, C, H, W] over the pixels of labels [H, W] that are not -1."""
    return F.cross_entropy(logits, labels[None], ignore_index=-1)


@dataclass
class Adversary:
    """D, with the attention gate on its target-path logits and optionally one on T's features."""

    disc: Discriminator
    attention: AttentionGate | None
    feature_attention: AttentionGate | None
    binary: bool
    n_classes: int

    @classmethod
    def build(cls, arm: str, n_classes: int, feature_attention: bool, device: torch.device) -> "Adversary":
        binary = arm == "binary"
        disc = Discriminator(16, 2 if binary else n_classes + 1).to(device)
        att = AttentionGate(n_classes + 1).to(device) if arm == "kplus1_attention" else None
        f_att = AttentionGate(16).to(device) if arm == "kplus1_attention" and feature_attention else None
        return cls(disc, att, f_att, binary, n_classes)

    def d_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.disc.parameters()) + (list(self.attention.parameters()) if self.attention else [])

    def target_logits(self, f_t: torch.Tensor) -> torch.Tensor:
        if self.feature_attention is not None:
            f_t = self.feature_attention(f_t)
        logits = self.disc(f_t)
        return self.attention(logits) if self.attention is not None else logits

    def d_loss(self, f_t: torch.Tensor, target_pixels: torch.Tensor, f_s: torch.Tensor,
               source_labels: torch.Tensor) -> torch.Tensor:
        """CE(Att(D(F_T)), "target") over `target_pixels` + CE(D(F_S), source class) over labelled source pixels."""
        target_class = 1 if self.binary else self.n_classes
        y_t = masked(torch.full(target_pixels.shape, target_class, dtype=torch.long, device=f_t.device), target_pixels)
        y_s = masked(torch.zeros_like(source_labels), source_labels >= 0) if self.binary else source_labels
        return pixel_ce(self.target_logits(f_t), y_t) + pixel_ce(self.disc(f_s), y_s)

    def t_loss(self, f_t: torch.Tensor, few: torch.Tensor) -> torch.Tensor:
        """K+1: CE(Att(D(F_T)), true class) on the labelled target pixels; binary: CE(D(F_T), "source")."""
        y = masked(torch.zeros_like(few), few >= 0) if self.binary else few
        return pixel_ce(self.target_logits(f_t), y)


def converged(history: list[float], patience: int, tolerance: float) -> bool:
    """Whether the last `patience` values stay within `tolerance` of their mean, relatively."""
    if len(history) < patience:
        return False
    window = np.asarray(history[-patience:])
    return bool(np.ptp(window) <= tolerance * max(abs(window.mean()), 1e-8))


class Adaptation:
    """One arm for one seed: T, its adversary and optimisers, over prepared tensors.

    x_s [1, bands, Hs, Ws] and y_s [Hs, Ws] (source labels), x_t [1, bands, Ht, Wt]
    and few [Ht, Wt] (the labelled target pixels, -1 elsewhere).
    """

    def __init__(self, source: Segmenter, arm: str, cfg: AdaptConfig, n_classes: int, seed: int,
                 x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, few: torch.Tensor):
        device = x_t.device
        torch.manual_seed(seed)
        self.rng = np.random.default_rng([seed, 5])
        self.arm, self.cfg = arm, cfg
        self.source = freeze(source.eval())
        self.target = copy.deepcopy(self.source)
        for p in self.target.body.parameters():
            p.requires_grad_(True)
        self.target.eval()  # the classifier stays frozen; BatchNorm as adapt.target_batchnorm says
        if cfg.target_batchnorm == "target":
            batchnorm_on_target(self.target)
        self.x_t, self.few, self.y_s = x_t, few, y_s
        self.adaptation_pixels = few >= 0 if cfg.d_target_pixels == "labelled" else torch.ones_like(few, dtype=torch.bool)
        with torch.no_grad():
            self.f_s = self.source.features(x_s)  # S is frozen: its features never change
        self.adversary = None if arm == "finetune" else Adversary.build(arm, n_classes, cfg.feature_attention, device)
        t_params = [p for p in self.target.parameters() if p.requires_grad]
        if self.adversary is not None:
            self.opt_d = torch.optim.Adam(self.adversary.d_parameters(), lr=cfg.d_lr)
            if self.adversary.feature_attention is not None:
                t_params += list(self.adversary.feature_attention.parameters())
        self.opt_t = torch.optim.Adam(t_params, lr=cfg.t_lr)

    def iteration(self) -> dict[str, float]:
        """d_steps discriminator steps, then t_steps segmenter steps; the last step's losses."""
        out = {}
        if self.adversary is not None:
            with torch.no_grad():
                f_t = self.target.features(self.x_t)
            for _ in range(self.cfg.d_steps):
                ts = random_tile(self.cfg.tile, tuple(self.few.shape), self.rng)
                ss = random_tile(self.cfg.tile, tuple(self.y_s.shape), self.rng)
                loss = self.adversary.d_loss(f_t[..., ts[0], ts[1]], self.adaptation_pixels[ts],
                                             self.f_s[..., ss[0], ss[1]], self.y_s[ss])
                if torch.isfinite(loss):  # a tile without the pixels of one term gives NaN: skip it
                    self.opt_d.zero_grad()
                    loss.backward()
                    self.opt_d.step()
                    out["loss_d"] = float(loss.detach())
        for _ in range(self.cfg.t_steps):
            ys, xs = random_tile(self.cfg.tile, tuple(self.few.shape), self.rng)
            few = self.few[ys, xs]
            if not (few >= 0).any():
                continue
            x = self.x_t[..., ys, xs]
            if self.adversary is None:
                loss = pixel_ce(self.target(x), few)
            else:
                loss = self.adversary.t_loss(self.target.features(x), few)
            self.opt_t.zero_grad()
            loss.backward()
            self.opt_t.step()
            out["loss_t"] = float(loss.detach())
        return out

    def run(self) -> dict:
        """Iterate until both losses stay converged for `patience` iterations, or `iterations`."""
        history: dict[str, list[float]] = {"loss_d": [], "loss_t": []}
        start = time.perf_counter()
        it = 0
        for it in range(1, self.cfg.iterations + 1):
            for key, value in self.iteration().items():
                history[key].append(value)
            tracked = [h for h in history.values() if h]
            if tracked and all(converged(h, self.cfg.patience, self.cfg.tolerance) for h in tracked):
                break
        seconds = time.perf_counter() - start
        return {"arm": self.arm, "iterations": it, "seconds_per_iteration": seconds / max(it, 1),
                "loss_d": history["loss_d"], "loss_t": history["loss_t"]}


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/adapt_train.json's content."""
    device = device_of(params)
    prep = load_prepared(paths.adapt_prepared, device)
    records, nets, per_iteration = [], [], {}
    for i, seed in enumerate(seeds(params)):
        source, _ = load_segmenter(paths.adapt_source_models / f"source_{seed}.pt", device)
        for arm in ARMS:
            if arm == "adabn":
                records.append({"seed": seed, "arm": arm, "iterations": 0, "loss_d": [], "loss_t": []})
                nets.append(adabn(source, prep.target))
                continue
            job = Adaptation(copy.deepcopy(source), arm, params.adapt, params.n_classes, seed,
                             prep.source, prep.source_train, prep.target, prep.target_few[i])
            record = {"seed": seed, **job.run()}
            per_iteration.setdefault(arm, []).append(record.pop("seconds_per_iteration"))
            records.append(record)
            nets.append(job.target)
            if progress:
                print(f"adapt: seed {seed} {arm}: {record['iterations']} iterations, "
                      f"{per_iteration[arm][-1]:.2f} s per iteration", flush=True)
    # Results only in the DVC metrics file: wall times differ run to run, so they go to MLflow.
    summary = {"runs": records}
    with staged_outputs(paths.adapt_target_models, files=(paths.metrics("adapt_train"),)) as (out, metrics):
        for net, record in zip(nets, records):
            save_segmenter(out / f"{record['arm']}_{record['seed']}.pt", net,
                           {"n_bands": prep.n_bands, "n_classes": params.n_classes, "seed": record["seed"],
                            "arm": record["arm"]})
        write_json(metrics, summary)
    with tracking.stage_run("adapt", params, paths, experiment=EXPERIMENT) as mlrun:
        mlrun.log_params({f"adapt.{k}": getattr(params.adapt, k) for k in
                          ("iterations", "d_steps", "t_steps", "d_lr", "t_lr", "d_target_pixels",
                           "feature_attention", "target_batchnorm", "patience", "tolerance")})
        _log_curves(mlrun, records)
        mlrun.log_metrics({f"seconds_per_iteration.{a}": float(np.mean(v)) for a, v in per_iteration.items()})
        mlrun.log_output(paths.adapt_target_models)
    return summary


def _log_curves(mlrun: tracking.StageRun, records: list[dict]) -> None:
    """Every loss curve, batched: one MLflow call per 1000 points rather than one per point."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(f"{r['arm']}.seed{r['seed']}.{key}", value, now, step)
              for r in records for key in ("loss_d", "loss_t") for step, value in enumerate(r[key], start=1)]
    for start in range(0, len(points), 1000):
        mlrun.client.log_batch(mlrun.run_id, metrics=points[start:start + 1000])
