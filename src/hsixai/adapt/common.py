"""What the adapt stages share: seeds, device, arms, pairs, checkpoints, the prepared pair, BatchNorm recalibration.

No stage module imports another stage module (docs/adaptation.md, "Code"): a
piece two stages need lives here, in models.py (the networks) or in
training.py (the adversarial game).
"""

from __future__ import annotations

import copy
import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ..config import ADAPT_ARMS, ALL_LABELS, Params
from ..errors import HsixaiError
from ..io import load_npy
from ..paths import AdaptPreparedFiles
from ..runtime import load_checkpoint, resolve_device, save_checkpoint
from .models import Segmenter, batchnorm_layers

EXPERIMENT = "adapt"  # the MLflow parent run of every adapt stage

Job = TypeVar("Job")
Result = TypeVar("Result")


def arms(params: Params) -> list[str]:
    """The arms of adapt.arms that the `adapt` stage trains or recalibrates, in ADAPT_ARMS order."""
    return [a for a in ADAPT_ARMS if a in params.adapt.arms]


def evaluated_arms(params: Params) -> list[str]:
    """What adapt_evaluate scores: S as it is (`source_only`), then every arm."""
    return ["source_only", *arms(params)]


def seeds(params: Params) -> list[int]:
    """The ablation's seeds: seed i pretrains its own S, draws its own few labels and initialises its own D."""
    return [params.seed + s for s in range(params.adapt.seeds)]


def device_of(params: Params) -> torch.device:
    """adapt.device as a torch device; a CUDA request without CUDA is an error naming adapt.device."""
    return resolve_device(params.adapt.device, "adapt.device")


# --------------------------------------------------------------------------- jobs on the CPU cores
def run_jobs(fn: Callable[[Job], Result], jobs: Sequence[Job], workers: int, device: torch.device) -> Iterator[Result]:
    """fn(job) for every job, yielded in job order, up to `workers` at once in processes of their own.

    Every job runs on one torch thread, in a worker or in this process, so a
    result does not depend on `workers` (torch's CPU kernels may sum in another
    order on another thread count). `fn` must be a module-level function and
    jobs and results plain picklable data (numpy arrays, not tensors: torch
    would pass tensors through shared-memory files). On CUDA, or with one
    worker or one job, the jobs run here one after another. Workers are
    spawned, not forked: a forked child inherits torch's thread pools and locks.
    """
    if device.type != "cpu" or workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            with _one_thread():
                result = fn(job)
            yield result
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_worker_setup) as pool:
        yield from pool.map(fn, jobs)


def _worker_setup() -> None:
    torch.set_num_threads(1)


@contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def state_arrays(net: nn.Module) -> dict[str, np.ndarray]:
    """A network's state as numpy arrays, to send from a worker (run_jobs)."""
    return {name: t.detach().cpu().numpy() for name, t in net.state_dict().items()}


def segmenter_from_arrays(arrays: dict[str, np.ndarray], meta: dict) -> Segmenter:
    """The segmenter of state_arrays (eval mode); `meta` as its checkpoint's (n_bands, n_classes, feature_map)."""
    net = _segmenter_of(meta)
    net.load_state_dict({name: torch.from_numpy(a) for name, a in arrays.items()})
    return net.eval()


# --------------------------------------------------------------------------- checkpoints (tensors only)
def save_segmenter(path: Path, net: Segmenter, meta: dict) -> None:
    """Tensors and plain metadata only, so loading works with weights_only=True."""
    save_checkpoint(path, net.state_dict(), meta)


def _segmenter_of(meta: dict) -> Segmenter:
    """An untrained segmenter of a checkpoint's shape (its meta: n_bands, n_classes, feature_map)."""
    return Segmenter(meta["n_bands"], meta["n_classes"], feature_map=meta.get("feature_map", "linear"))


def load_segmenter(path: Path, device: torch.device | str = "cpu") -> tuple[Segmenter, dict]:
    """A segmenter in eval mode and its metadata; a bad checkpoint is refused in one line (runtime.load_checkpoint)."""
    return load_checkpoint(
        path,
        _segmenter_of,
        device,
        written_by="the adapt stages",
        missing_hint="run the adapt stages in order: dvc repro adapt_evaluate",
    )


# --------------------------------------------------------------------------- labels
def few_labels(pool: np.ndarray, per_class: int | str, seed: int) -> np.ndarray:
    """`per_class` pixels of each class of `pool` [H, W] (int8, -1 = unlabelled), or all of them for "all".

    Each class's pixels are put in one seeded random order and the first
    `per_class` are taken, so for one seed 10 labels are a subset of 50, and
    50 of all: a labels sweep compares nested sets, paired by seed.
    """
    if per_class == ALL_LABELS:
        return pool.astype(np.int8).copy()
    rng = np.random.default_rng([seed, 7])
    out = np.full(pool.shape, -1, dtype=np.int8)
    flat = pool.ravel()
    for c in np.unique(flat[flat >= 0]):
        order = rng.permutation(np.flatnonzero(flat == c))
        out.flat[order[:per_class]] = c
    return out


def labels_tag(per_class: int | str) -> str:
    """A name for a labels level in metrics keys: 10 -> "10", "all" -> "all"."""
    return str(per_class)


# --------------------------------------------------------------------------- the prepared pair
@dataclass
class Prepared:
    """One prepared pair as tensors [1, bands, H, W] and label maps [H, W] (long, -1 = unlabelled).

    For a one-scene pair `target` is `source` (the same tensor) and
    `target_region` marks the target's part of it; for two scenes the region is
    the whole target scene.
    """

    pair: str
    source: torch.Tensor
    target: torch.Tensor
    source_train: torch.Tensor
    source_val: torch.Tensor
    source_test: torch.Tensor
    target_pool: torch.Tensor
    target_test: torch.Tensor
    target_region: torch.Tensor  # bool [Ht, Wt]
    n_bands: int
    one_scene: bool


def load_prepared(files: AdaptPreparedFiles, pair: str, device: torch.device) -> Prepared:
    """The pair written by adapt_prepare, with shapes checked; a missing or mismatched file is a one-line error."""

    def cube(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.asarray(load_npy(path, path.name, ndim=3, kinds="f")))[None].to(device)

    def labels(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.asarray(load_npy(path, path.name, ndim=2, kinds="i"))).long().to(device)

    if not files.meta.is_file():
        raise HsixaiError(
            f"{files.directory}: prepared pair '{pair}' not found (run adapt_prepare with this pair in adapt.pairs)"
        )
    meta = json.loads(files.meta.read_text())
    source = cube(files.source_cube)
    one_scene = bool(meta["one_scene"])
    target = source if one_scene else cube(files.target_cube)
    region = (
        torch.from_numpy(np.asarray(load_npy(files.target_region, files.target_region.name, ndim=2, kinds="bi")))
        .bool()
        .to(device)
    )
    prepared = Prepared(
        pair,
        source,
        target,
        labels(files.source_train),
        labels(files.source_val),
        labels(files.source_test),
        labels(files.target_pool),
        labels(files.target_test),
        region,
        source.shape[1],
        one_scene,
    )
    source_maps = (prepared.source_train, prepared.source_val, prepared.source_test)
    target_maps = (prepared.target_pool, prepared.target_test, prepared.target_region)
    if any(m.shape != source.shape[-2:] for m in source_maps) or any(m.shape != target.shape[-2:] for m in target_maps):
        raise HsixaiError(f"{files.directory}: masks and cubes disagree in size (re-run adapt_prepare)")
    return prepared


def load_few(path: Path, n_seeds: int, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The few labelled target pixels per seed, long [seeds, H, W], checked against the ablation's seeds."""
    few = np.asarray(load_npy(path, path.name, ndim=3, kinds="i"))
    if few.shape[0] < n_seeds or few.shape[1:] != tuple(shape):
        raise HsixaiError(
            f"{path}: expected [{n_seeds}, {shape[0]}, {shape[1]}] few-label masks, found "
            f"{list(few.shape)} (re-run adapt_prepare)"
        )
    return torch.from_numpy(few[:n_seeds]).long().to(device)


def random_tile(tile: int, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[slice, slice]:
    """A random tile x tile window of an H x W map; the whole map when tile is 0."""
    if tile == 0:
        return slice(None), slice(None)
    y, x = (int(rng.integers(0, s - tile + 1)) for s in shape)
    return slice(y, y + tile), slice(x, x + tile)


# --------------------------------------------------------------------------- BatchNorm recalibration
def tiles_of(shape: tuple[int, ...], tile: int) -> list[tuple[slice, slice]]:
    """Non-overlapping windows partitioning an H x W map, one when tile is 0.

    Every window has sides of at least `tile` (or the map's side): the
    remainder joins the last row or column of windows, so no sliver too small
    for the U-Net's two poolings is left at an edge.
    """
    if tile == 0:
        return [(slice(None), slice(None))]

    def cuts(n: int) -> list[slice]:
        starts = list(range(0, max(n - tile, 0) + 1, tile))
        return [slice(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]

    return [(ys, xs) for ys in cuts(shape[0]) for xs in cuts(shape[1])]


def recalibrate(net: nn.Module, x: torch.Tensor, tile: int = 0) -> nn.Module:
    """A copy of `net` in eval mode whose BatchNorm statistics are those of the whole scene x [1, bands, H, W].

    Layer by layer, in forward order: with every earlier BatchNorm already
    recalibrated, the inputs of the next one are collected over the whole
    scene (over all `tile` x `tile` windows if tile > 0, for scenes too large
    for one pass) and its running mean and (unbiased) variance set to theirs.
    Weights are unchanged. With tile 0 this is AdaBN on the whole scene.
    """
    net = copy.deepcopy(net).eval()
    windows = tiles_of(tuple(x.shape[-2:]), tile)
    for _, bn in batchnorm_layers(net):
        sums: list[torch.Tensor] = []

        def collect(module, args, sums=sums):  # returns None: the input goes on unchanged
            inp = args[0].transpose(0, 1).reshape(args[0].shape[1], -1).double()  # [C, pixels]
            sums.append(torch.stack([torch.full_like(inp[:, 0], inp.shape[1]), inp.sum(1), (inp * inp).sum(1)]))

        handle = bn.register_forward_pre_hook(collect)
        with torch.no_grad():
            for ys, xs in windows:
                net(x[..., ys, xs])
        handle.remove()
        n, s1, s2 = torch.stack(sums).sum(0)
        mean = s1 / n
        var = (s2 - n * mean * mean) / (n - 1).clamp(min=1)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.clamp(min=0).to(bn.running_var.dtype))
    return net
