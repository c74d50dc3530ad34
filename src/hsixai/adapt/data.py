"""`adapt_prepare` stage: a source and a target raw acquisition -> two consistently scaled cubes and masks.

Both scenes lose the bands of `data.remove_bands` and are min-max scaled per
band with the **source's** range, so one reflectance means one input value in
both scenes and the domain gap stays what the sensor saw (README, "Domain
adaptation", on why not per scene). Target values may fall outside [0, 1].

Outputs in data/adapt/prepared/:
    source_cube.npy, target_cube.npy  float32 [bands, H, W]
    source_train.npy, source_val.npy  int8 [H, W], -1 = unlabelled: source training mask, split for early stopping
    target_few.npy                    int8 [seeds, H, W]: per seed, `adapt.target_labels_per_class` pixels per class
    target_test.npy                   int8 [H, W]: the target's fixed test mask
    band_range.npy                    float32 [2, bands]: the source's raw min and max per kept band
    meta.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Params
from ..errors import HsixaiError
from ..io import BandReader, load_npy, staged_outputs, write_json
from ..paths import Paths
from ..data.prepare import kept_bands, to_zero_based
from ..data.readers import RawScene, open_raw_scene


# --------------------------------------------------------------------------- checks
def open_pair(params: Params, paths: Paths) -> tuple[RawScene, RawScene]:
    """Both raw scenes, checked against each other and against the adapt params."""
    k = params.n_classes
    source = open_raw_scene(paths.resolve(params.adapt.source_dir), k)
    target = open_raw_scene(paths.resolve(params.adapt.target_dir), k)
    if source.n_bands != target.n_bands:
        raise HsixaiError(f"params: adapt.target_dir: {target.cube.path} has {target.n_bands} bands, "
                          f"the source {source.cube.path} has {source.n_bands}; expected the same sensor's bands")
    _check_classes(source, target, params)
    tile = params.adapt.tile
    for scene in (source, target):
        if tile > min(scene.spatial_shape):
            raise HsixaiError(f"params: adapt.tile: expected at most the scene's smaller side, found {tile} for "
                              f"{scene.directory} ({scene.spatial_shape[0]} x {scene.spatial_shape[1]} px)")
    return source, target


def _check_classes(source: RawScene, target: RawScene, params: Params) -> None:
    names = params.data.class_names
    in_source = set(np.unique(source.train[source.train > 0]).tolist())
    in_target = set(np.unique(target.train[target.train > 0]).tolist()) | \
        set(np.unique(target.test[target.test > 0]).tolist())
    if in_source != in_target:
        only_s = [names[c - 1] for c in sorted(in_source - in_target)]
        only_t = [names[c - 1] for c in sorted(in_target - in_source)]
        raise HsixaiError(f"params: adapt.source_dir/target_dir: expected the same classes in {source.directory} "
                          f"(train_crops.npy) and {target.directory}, found only in the source {only_s}, "
                          f"only in the target {only_t}")
    n = params.adapt.target_labels_per_class
    counts = np.bincount(target.train.ravel(), minlength=len(names) + 1)[1:]
    short = [f"{names[c]} ({counts[c]})" for c in range(len(names)) if c + 1 in in_target and counts[c] < n]
    if short:
        raise HsixaiError(f"params: adapt.target_labels_per_class: expected at least {n} labelled pixels per class in "
                          f"{target.directory / 'train_crops.npy'}, found {', '.join(short)}")
    source_counts = np.bincount(source.train.ravel(), minlength=len(names) + 1)[1:]
    thin = [names[c] for c in range(len(names)) if c + 1 in in_source and source_counts[c] < 2]
    if thin:
        raise HsixaiError(f"{source.directory / 'train_crops.npy'}: expected at least 2 training pixels per class "
                          f"(train and validation), found fewer for {', '.join(thin)}")


# --------------------------------------------------------------------------- masks
def few_labels(train: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` random pixels of each class of `train` (int8, -1 = unlabelled); the same seed, the same pixels."""
    rng = np.random.default_rng([seed, 7])
    out = np.full(train.shape, -1, dtype=np.int8)
    flat = train.ravel()
    for c in np.unique(flat[flat >= 0]):
        chosen = rng.choice(np.flatnonzero(flat == c), size=per_class, replace=False)
        out.flat[chosen] = c
    return out


def validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each class's labelled pixels split at random into train and validation (at least one pixel each)."""
    rng = np.random.default_rng([seed, 11])
    val = np.full(train.shape, -1, dtype=np.int8)
    flat = train.ravel()
    for c in np.unique(flat[flat >= 0]):
        idx = rng.permutation(np.flatnonzero(flat == c))
        n_val = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        val.flat[idx[:n_val]] = c
    return np.where(val >= 0, -1, train).astype(np.int8), val


# --------------------------------------------------------------------------- cubes
def source_range(scene: RawScene, kept: np.ndarray) -> np.ndarray:
    """[2, bands]: the raw min and max of each kept band of `scene`."""
    out = np.zeros((2, len(kept)), dtype=np.float32)
    with BandReader(scene.cube) as reader:
        for i, b in enumerate(kept):
            band = reader.read(int(b))
            _check_finite(band, int(b), scene)
            out[:, i] = band.min(), band.max()
    return out


def scaled_cube(scene: RawScene, kept: np.ndarray, band_range: np.ndarray) -> np.ndarray:
    """[bands, H, W] float32, each kept band scaled with `band_range`, never clipped."""
    lo, hi = band_range
    span = np.where(hi > lo, hi - lo, 1.0)  # a constant source band maps to 0 and carries nothing
    cube = np.empty((len(kept), *scene.spatial_shape), dtype=np.float32)
    with BandReader(scene.cube) as reader:
        for i, b in enumerate(kept):
            band = reader.read(int(b)).astype(np.float32)
            _check_finite(band, int(b), scene)
            cube[i] = (band - lo[i]) / span[i] if hi[i] > lo[i] else 0.0
    return cube


def _check_finite(band: np.ndarray, index: int, scene: RawScene) -> None:
    if not np.isfinite(band).all():
        raise HsixaiError(f"{scene.cube.path}: band {index} has {int((~np.isfinite(band)).sum())} NaN or Inf values; "
                          f"expected finite values")


# --------------------------------------------------------------------------- the stage
def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns meta.json's content."""
    cfg = params.adapt
    source, target = open_pair(params, paths)
    kept = kept_bands(source.n_bands, params.data.removed_band_indices())
    band_range = source_range(source, kept)
    source_train, source_val = validation_split(to_zero_based(source.train), cfg.val_fraction, params.seed)
    target_train = to_zero_based(target.train)
    few = np.stack([few_labels(target_train, cfg.target_labels_per_class, params.seed + s) for s in range(cfg.seeds)])
    meta = {"class_names": params.data.class_names, "seeds": [params.seed + s for s in range(cfg.seeds)],
            "source_dir": cfg.source_dir, "target_dir": cfg.target_dir,
            "source_shape": [len(kept), *source.spatial_shape], "target_shape": [len(kept), *target.spatial_shape],
            "target_test_pixels": int((target.test > 0).sum()), "target_labels_per_class": cfg.target_labels_per_class}
    with staged_outputs(paths.adapt_prepared) as (out,):
        np.save(out / "source_cube.npy", scaled_cube(source, kept, band_range))
        np.save(out / "target_cube.npy", scaled_cube(target, kept, band_range))
        np.save(out / "source_train.npy", source_train)
        np.save(out / "source_val.npy", source_val)
        np.save(out / "target_few.npy", few)
        np.save(out / "target_test.npy", to_zero_based(target.test))
        np.save(out / "band_range.npy", band_range)
        write_json(out / "meta.json", meta)
    return meta


@dataclass
class Prepared:
    """The prepared pair as tensors [1, bands, H, W] and label maps [H, W] (long, -1 = unlabelled)."""

    source: torch.Tensor
    target: torch.Tensor
    source_train: torch.Tensor
    source_val: torch.Tensor
    target_few: torch.Tensor  # [seeds, H, W]
    target_test: torch.Tensor
    n_bands: int


def load_prepared(directory: Path, device: torch.device) -> Prepared:
    def cube(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(load_npy(directory / name, name, ndim=3, kinds="f")))[None].to(device)

    def labels(name: str, ndim: int = 2) -> torch.Tensor:
        return torch.from_numpy(np.asarray(load_npy(directory / name, name, ndim=ndim, kinds="i"))).long().to(device)

    src, tgt = cube("source_cube.npy"), cube("target_cube.npy")
    prepared = Prepared(src, tgt, labels("source_train.npy"), labels("source_val.npy"), labels("target_few.npy", 3),
                        labels("target_test.npy"), src.shape[1])
    if prepared.source_train.shape != src.shape[-2:] or prepared.target_test.shape != tgt.shape[-2:]:
        raise HsixaiError(f"{directory}: masks and cubes disagree in size (re-run adapt_prepare)")
    return prepared


def random_tile(tile: int, shape: tuple[int, int], rng: np.random.Generator) -> tuple[slice, slice]:
    """A random tile x tile window of an H x W map; the whole map when tile is 0."""
    if tile == 0:
        return slice(None), slice(None)
    y, x = (int(rng.integers(0, s - tile + 1)) for s in shape)
    return slice(y, y + tile), slice(x, x + tile)
