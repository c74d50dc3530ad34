"""The adversarial game and its stopping rule, shared by the `adapt` and `adapt_labels` stages.

T starts as a copy of the frozen source segmenter S with its final 1x1
classifier frozen. One iteration, on one pair of inputs (the whole scenes, or
one target tile and one source tile when adapt.tile > 0):

    d_steps D steps   T in eval mode (running statistics) gives F_T; D in train mode;
                      L_D = CE(Att(D(F_T)), "target") over the adaptation pixels + CE(D(F_S), class) over the
                      labelled source pixels (Att only in kplus1_attention)
    t_steps T steps   D in eval mode (adapt.d_mode_in_t_steps); T's BatchNorm on target batch statistics
                      (adapt.target_batchnorm: target), which also moves its running statistics;
                      L_T = CE(Att(D(F_T)), true class) over the labelled target pixels

Arms: finetune (no D: L_T = CE(T(x), class) on the labelled target pixels,
the same budget and T steps), binary (D says source vs target; T makes its
labelled target pixels look "source"), kplus1 (K+1 D, no gate),
kplus1_attention. After each T step, T's own supervised loss is measured: the
cross-entropy of its frozen classifier, T in eval mode, on the labelled target
pixels (the authors' C2Seg code). The run stops by one of the published rules
on per-iteration MEAN losses (adapt.stop_rule), for `stop_patience`
iterations in a row after the first: `supervised_ce` (C2Seg, few target
labels) mean supervised loss < stop_loss_supervised; `adversarial_losses`
(UH, BOT) mean D loss < stop_loss_d and mean T loss < stop_loss_t (finetune
reads the T loss only). Else it ends after `iterations`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AdaptConfig
from .common import Prepared, random_tile, recalibrate
from .models import AttentionGate, Discriminator, Segmenter, batchnorm_layers, freeze

FEATURES = 16  # channels of the segmenter's feature map F
D_GATE_WIDTHS = (100, 50)  # published gate on D's K + 1 logits
FEATURE_GATE_WIDTHS = (2,)  # published gate on T's feature map


def set_batchnorm_training(net: torch.nn.Module, training: bool) -> torch.nn.Module:
    """BatchNorm layers to training (batch statistics, running statistics updated) or eval mode; the rest as is."""
    for _, module in batchnorm_layers(net):
        module.train(training)
    return net


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
    def build(cls, arm: str, n_classes: int, feature_attention: bool, device: torch.device) -> Adversary:
        binary = arm == "binary"
        disc = Discriminator(FEATURES, 2 if binary else n_classes + 1).to(device)
        gated = arm == "kplus1_attention"
        att = AttentionGate(n_classes + 1, D_GATE_WIDTHS).to(device) if gated else None
        f_att = AttentionGate(FEATURES, FEATURE_GATE_WIDTHS).to(device) if gated and feature_attention else None
        return cls(disc, att, f_att, binary, n_classes)

    def d_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.disc.parameters()) + (list(self.attention.parameters()) if self.attention else [])

    def train(self, training: bool) -> None:
        """D and its gate to training or eval mode (the feature gate follows T, not D)."""
        self.disc.train(training)
        if self.attention is not None:
            self.attention.train(training)

    def gated_features(self, f_t: torch.Tensor) -> torch.Tensor:
        return self.feature_attention(f_t) if self.feature_attention is not None else f_t

    def target_logits(self, f_t: torch.Tensor) -> torch.Tensor:
        """D's logits on target features [1, 16, H, W] -> [1, K+1 (or 2), H, W], through the gate if any."""
        logits = self.disc(f_t)
        return self.attention(logits) if self.attention is not None else logits

    def d_loss(
        self, f_t: torch.Tensor, target_pixels: torch.Tensor, f_s: torch.Tensor, source_labels: torch.Tensor
    ) -> torch.Tensor:
        """CE(Att(D(F_T)), "target") over `target_pixels` + CE(D(F_S), source class) over labelled source pixels."""
        target_class = 1 if self.binary else self.n_classes
        y_t = masked(torch.full(target_pixels.shape, target_class, dtype=torch.long, device=f_t.device), target_pixels)
        y_s = masked(torch.zeros_like(source_labels), source_labels >= 0) if self.binary else source_labels
        return pixel_ce(self.target_logits(f_t), y_t) + pixel_ce(self.disc(f_s), y_s)

    def t_loss(self, f_t: torch.Tensor, few: torch.Tensor) -> torch.Tensor:
        """K+1: CE(Att(D(F_T)), true class) on the labelled target pixels; binary: CE(D(F_T), "source")."""
        y = masked(torch.zeros_like(few), few >= 0) if self.binary else few
        return pixel_ce(self.target_logits(f_t), y)


@dataclass
class IterationLosses:
    """One iteration's mean losses; None where no step of that kind ran."""

    d: float | None  # D loss over its d_steps
    t: float | None  # T's training loss over its t_steps
    supervised: float | None  # T's own classifier's CE on the labelled target pixels, eval mode, after each T step


@dataclass
class StopRule:
    """The published stopping rules on per-iteration mean losses (adapt.stop_rule).

    Stop once `patience` iterations in a row are quiet, the first iteration
    not counted: the authors watch a metric that falls in every loud epoch with
    Lightning's EarlyStopping(mode="min", patience=15), which takes its first
    value as an improvement, so the earliest stop is after patience + 1.
    Quiet: `supervised_ce` (C2Seg) mean supervised loss < loss_supervised;
    `adversarial_losses` (UH, BOT) mean D loss < loss_d and mean T loss <
    loss_t, the T loss alone where there is no D (finetune).
    """

    rule: str
    loss_d: float
    loss_t: float
    loss_supervised: float
    patience: int
    reads_d: bool = True  # False for finetune, which has no D
    seen: int = 0
    streak: int = 0

    @classmethod
    def from_config(cls, cfg: AdaptConfig, reads_d: bool) -> StopRule:
        thresholds = (cfg.stop_loss_d, cfg.stop_loss_t, cfg.stop_loss_supervised)
        return cls(cfg.stop_rule, *thresholds, cfg.stop_patience, reads_d)

    def quiet(self, losses: IterationLosses) -> bool:
        if self.rule == "supervised_ce":
            return losses.supervised is not None and losses.supervised < self.loss_supervised
        quiet_d = not self.reads_d or (losses.d is not None and losses.d < self.loss_d)
        return quiet_d and losses.t is not None and losses.t < self.loss_t

    def update(self, losses: IterationLosses) -> bool:
        """Record one iteration's means; whether to stop now."""
        self.seen += 1
        self.streak = self.streak + 1 if self.seen > 1 and self.quiet(losses) else 0
        return self.streak >= self.patience


@dataclass
class RunRecord:
    """One arm and seed: per-iteration mean losses, how many iterations ran and whether the rule stopped it."""

    arm: str
    seed: int
    iterations: int = 0
    stopped_by_rule: bool = False
    loss_d: list[float] = field(default_factory=list)
    loss_t: list[float] = field(default_factory=list)
    loss_supervised: list[float] = field(default_factory=list)
    seconds: float = 0.0


class Adaptation:
    """One arm for one seed: T, its adversary and optimisers, over prepared tensors.

    x_s [1, bands, Hs, Ws] and y_s [Hs, Ws] (source labels), x_t [1, bands, Ht, Wt],
    few [Ht, Wt] (the labelled target pixels, -1 elsewhere) and region [Ht, Wt]
    (bool, the target's part of x_t: the pixels D may call "target" with
    adapt.d_target_pixels: all).
    """

    def __init__(
        self,
        source: Segmenter,
        arm: str,
        cfg: AdaptConfig,
        n_classes: int,
        seed: int,
        x_s: torch.Tensor,
        y_s: torch.Tensor,
        x_t: torch.Tensor,
        few: torch.Tensor,
        region: torch.Tensor | None = None,
    ):
        device = x_t.device
        torch.manual_seed(seed)
        self.rng = np.random.default_rng([seed, 5])
        self.arm, self.cfg, self.seed = arm, cfg, seed
        self.source = freeze(source.eval())
        self.target = copy.deepcopy(self.source)
        for p in self.target.body.parameters():  # the classifier stays frozen
            p.requires_grad_(True)
        self.x_s, self.x_t, self.few, self.y_s = x_s, x_t, few, y_s
        region = torch.ones_like(few, dtype=torch.bool) if region is None else region
        self.adaptation_pixels = few >= 0 if cfg.d_target_pixels == "labelled" else region
        self.adversary = None if arm == "finetune" else Adversary.build(arm, n_classes, cfg.feature_attention, device)
        t_params = [p for p in self.target.parameters() if p.requires_grad]
        if self.adversary is not None:
            self.opt_d = torch.optim.Adam(self.adversary.d_parameters(), lr=cfg.d_lr)
            if self.adversary.feature_attention is not None:
                t_params += list(self.adversary.feature_attention.parameters())
        self.opt_t = torch.optim.Adam(t_params, lr=cfg.t_lr)
        self._f_s: torch.Tensor | None = None

    # ------------------------------------------------------------------ modes
    def _target_mode(self, adapting: bool) -> None:
        """T in eval mode, except its BatchNorm (and feature gate) in T steps with target_batchnorm: target."""
        self.target.eval()
        on_target = adapting and self.cfg.target_batchnorm == "target"
        set_batchnorm_training(self.target, on_target)
        if self.adversary is not None and self.adversary.feature_attention is not None:
            self.adversary.feature_attention.train(adapting)

    def _target_features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.target.features(x)
        return self.adversary.gated_features(f) if self.adversary is not None else f

    def source_features(self, ss: tuple[slice, slice]) -> torch.Tensor:
        """S's features of the source (S is frozen: computed once for whole scenes, per tile otherwise)."""
        if self.cfg.tile == 0:
            if self._f_s is None:
                with torch.no_grad():
                    self._f_s = self.source.features(self.x_s)
            return self._f_s
        with torch.no_grad():
            return self.source.features(self.x_s[..., ss[0], ss[1]])

    # ------------------------------------------------------------------ one iteration
    def iteration(self) -> IterationLosses:
        """d_steps D steps, then t_steps T steps, on one target window and one source window; the mean losses."""
        ts = random_tile(self.cfg.tile, tuple(self.few.shape), self.rng)
        ss = random_tile(self.cfg.tile, tuple(self.y_s.shape), self.rng)
        x_t, few = self.x_t[..., ts[0], ts[1]], self.few[ts]
        d_losses, t_losses, supervised = [], [], []
        if self.adversary is not None:
            f_s, y_s = self.source_features(ss), self.y_s[ss]
            self._target_mode(adapting=False)
            with torch.no_grad():  # T does not change during the D steps
                f_t = self._target_features(x_t)
            self.adversary.train(True)
            for _ in range(self.cfg.d_steps):
                loss = self.adversary.d_loss(f_t, self.adaptation_pixels[ts], f_s, y_s)
                if not torch.isfinite(loss):  # a tile without the pixels of one term: nothing to learn from it
                    break
                self.opt_d.zero_grad()
                loss.backward()
                self.opt_d.step()
                d_losses.append(float(loss.detach()))
        if (few >= 0).any():
            for _ in range(self.cfg.t_steps):
                if self.adversary is not None:
                    self.adversary.train(self.cfg.d_mode_in_t_steps == "train")
                self._target_mode(adapting=True)
                f_t = self._target_features(x_t)
                if self.adversary is None:
                    loss = pixel_ce(self.target.classifier(f_t), few)
                else:
                    loss = self.adversary.t_loss(f_t, few)
                self.opt_t.zero_grad()
                loss.backward()
                self.opt_t.step()
                t_losses.append(float(loss.detach()))
                supervised.append(self.supervised_loss(x_t, few))
        self._target_mode(adapting=False)
        mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
        return IterationLosses(mean(d_losses), mean(t_losses), mean(supervised))

    def supervised_loss(self, x_t: torch.Tensor, few: torch.Tensor) -> float:
        """CE of T's own (frozen) classifier on the labelled pixels of x_t, T in eval mode (running statistics)."""
        self._target_mode(adapting=False)
        with torch.no_grad():
            return float(pixel_ce(self.target.classifier(self._target_features(x_t)), few))

    def run(self) -> RunRecord:
        """Iterate until the stopping rule fires, or `iterations`."""
        rule = StopRule.from_config(self.cfg, reads_d=self.adversary is not None)
        record = RunRecord(self.arm, self.seed)
        start = time.perf_counter()
        for it in range(1, self.cfg.iterations + 1):
            losses = self.iteration()
            record.iterations = it
            for value, curve in ((losses.d, record.loss_d), (losses.t, record.loss_t)):
                if value is not None:
                    curve.append(value)
            if losses.supervised is not None:
                record.loss_supervised.append(losses.supervised)
            if rule.update(losses):
                record.stopped_by_rule = True
                break
        record.seconds = time.perf_counter() - start
        self.target.eval()
        return record

    def gate_map(self) -> torch.Tensor | None:
        """The D gate over the whole target scene, float [Ht, Wt], in eval mode as after training; None without one."""
        if self.adversary is None or self.adversary.attention is None:
            return None
        self._target_mode(adapting=False)
        self.adversary.train(False)
        with torch.no_grad():
            logits = self.adversary.disc(self._target_features(self.x_t))
            return self.adversary.attention.gate(logits)[0, 0]


def train_arm(
    source: Segmenter, arm: str, cfg: AdaptConfig, n_classes: int, seed: int, prep: Prepared, few: torch.Tensor
) -> tuple[Segmenter, RunRecord, torch.Tensor | None]:
    """One arm for one seed from S: the adapted segmenter (eval mode), its run record and its D gate map, if any.

    `adabn` trains nothing: S with BatchNorm statistics of the whole target scene.
    """
    if arm == "adabn":
        return recalibrate(source, prep.target, cfg.tile), RunRecord(arm, seed), None
    job = Adaptation(
        copy.deepcopy(source),
        arm,
        cfg,
        n_classes,
        seed,
        prep.source,
        prep.source_train,
        prep.target,
        few,
        prep.target_region,
    )
    record = job.run()
    return job.target, record, job.gate_map()
