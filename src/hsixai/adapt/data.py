"""`adapt_prepare` stage: each pair of adapt.pairs -> consistently scaled cubes, masks and the few target labels.

Pairs (docs/adaptation.md, "Pairs"):
    two_scenes  two raw acquisitions (adapt.source_dir, adapt.target_dir); the source's train mask trains S,
                the target's train mask is the pool the few labels are drawn from, its test mask the test
    shadow      one raw scene (adapt.shadow_dir) with region.npy: source = labelled pixels outside the region
                (in the sun), target = labelled pixels inside it (in the shadow); no pixel is both

Every band loses the bands of `data.remove_bands` and is min-max scaled with
the **source scene's** range (for one scene, its own), so one reflectance
means one input value on both sides and the gap stays what the sensor saw.
Target values may fall outside [0, 1].

Outputs:
    data/adapt/prepared/<pair>/    source_cube.npy (and target_cube.npy for two scenes) float32 [bands, H, W];
                                   source_train/val/test.npy, target_pool/test.npy int8 [H, W] (-1 = unlabelled);
                                   target_region.npy int8 [H, W]; band_range.npy float32 [2, bands]; meta.json
    data/adapt/target_labels/<pair>.npy   int8 [seeds, H, W]: per seed, adapt.target_labels_per_class pixels per
                                   class of the pool (a separate output, so a new labels level does not retrain S)
"""

from __future__ import annotations

import numpy as np

from ..checks import check_finite, check_mask_shape
from ..config import ALL_LABELS, Params
from ..data.readers import RawScene, kept_bands, open_raw_scene, to_zero_based
from ..errors import HsixaiError
from ..io import BandReader, load_npy, staged_outputs, write_json
from ..paths import RAW_REGION, Paths
from .common import few_labels, seeds


# --------------------------------------------------------------------------- the pairs' masks
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


def _outside(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    return np.where(region == 0, labels, -1).astype(np.int8)


def _inside(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    return np.where(region == 1, labels, -1).astype(np.int8)


class PairMasks:
    """One pair's zero-based masks: source train (before the validation split) and test, target pool and test."""

    def __init__(
        self,
        source_train: np.ndarray,
        source_test: np.ndarray,
        target_pool: np.ndarray,
        target_test: np.ndarray,
        target_region: np.ndarray,
    ):
        self.source_train, self.source_test = source_train, source_test
        self.target_pool, self.target_test, self.target_region = target_pool, target_test, target_region


def two_scene_masks(source: RawScene, target: RawScene) -> PairMasks:
    region = np.ones(target.spatial_shape, dtype=np.int8)
    return PairMasks(
        to_zero_based(source.train),
        to_zero_based(source.test),
        to_zero_based(target.train),
        to_zero_based(target.test),
        region,
    )


def one_scene_masks(scene: RawScene, region: np.ndarray) -> PairMasks:
    """Source = labelled pixels outside `region`, target = inside: disjoint by construction."""
    train, test = to_zero_based(scene.train), to_zero_based(scene.test)
    return PairMasks(
        _outside(train, region),
        _outside(test, region),
        _inside(train, region),
        _inside(test, region),
        region.astype(np.int8),
    )


# --------------------------------------------------------------------------- checks
def open_two_scenes(params: Params, paths: Paths) -> tuple[RawScene, RawScene]:
    """Both raw scenes of the two_scenes pair, checked against each other."""
    k = params.n_classes
    source = open_raw_scene(paths.resolve(params.adapt.source_dir), k)
    target = open_raw_scene(paths.resolve(params.adapt.target_dir), k)
    if source.n_bands != target.n_bands:
        raise HsixaiError(
            f"params: adapt.target_dir: {target.cube.path} has {target.n_bands} bands, "
            f"the source {source.cube.path} has {source.n_bands}; expected the same sensor's bands"
        )
    return source, target


def open_one_scene(params: Params, paths: Paths) -> tuple[RawScene, np.ndarray]:
    """The shadow pair's raw scene and its region mask (int8 [H, W], 1 = target)."""
    scene = open_raw_scene(paths.resolve(params.adapt.shadow_dir), params.n_classes)
    path = scene.directory / RAW_REGION
    if not path.is_file():
        raise HsixaiError(
            f"params: adapt.shadow_dir: {path} not found; expected the target region "
            f"(int [H, W], 1 = target, 0 = source) beside the raw scene"
        )
    region = load_npy(path, "target region", ndim=2, kinds="iub")
    check_mask_shape(region, scene.spatial_shape, f"{path}: target region")
    values = set(np.unique(region).tolist())
    if values != {0, 1}:
        raise HsixaiError(
            f"{path}: target region: expected both 0 (source) and 1 (target), found values {sorted(values)[:5]}"
        )
    return scene, region.astype(np.int8)


def check_masks(masks: PairMasks, params: Params, where: str) -> None:
    """The same classes on both sides, enough target pool pixels for the labels levels, two source pixels each."""
    names = params.data.class_names
    in_source = set(np.unique(masks.source_train[masks.source_train >= 0]).tolist())
    target_all = np.where(masks.target_pool >= 0, masks.target_pool, masks.target_test)
    in_target = set(np.unique(target_all[target_all >= 0]).tolist())
    if in_source != in_target:
        only_s = [names[c] for c in sorted(in_source - in_target)]
        only_t = [names[c] for c in sorted(in_target - in_source)]
        raise HsixaiError(
            f"params: {where}: expected the same classes in the source (train mask) and the target, "
            f"found only in the source {only_s}, only in the target {only_t}"
        )
    counts = np.bincount(masks.target_pool[masks.target_pool >= 0], minlength=len(names))
    cfg = params.adapt
    for key, level in [
        ("adapt.target_labels_per_class", cfg.target_labels_per_class),
        *((f"adapt.labels_sweep[{i}]", v) for i, v in enumerate(cfg.labels_sweep)),
    ]:
        if level == ALL_LABELS:
            continue
        short = [f"{names[c]} ({counts[c]})" for c in sorted(in_target) if counts[c] < level]
        if short:
            raise HsixaiError(
                f"params: {key}: expected at least {level} labelled target training pixels per class "
                f"({where}), found {', '.join(short)}"
            )
    source_counts = np.bincount(masks.source_train[masks.source_train >= 0], minlength=len(names))
    thin = [names[c] for c in sorted(in_source) if source_counts[c] < 2]
    if thin:
        raise HsixaiError(
            f"params: {where}: expected at least 2 source training pixels per class (train and "
            f"validation), found fewer for {', '.join(thin)}"
        )
    if not (masks.target_test >= 0).any():
        raise HsixaiError(f"params: {where}: expected labelled target test pixels, found none")


def check_tile(params: Params, *scenes: RawScene) -> None:
    tile = params.adapt.tile
    for scene in scenes:
        if tile > min(scene.spatial_shape):
            raise HsixaiError(
                f"params: adapt.tile: expected at most the scene's smaller side, found {tile} for "
                f"{scene.directory} ({scene.spatial_shape[0]} x {scene.spatial_shape[1]} px)"
            )


# --------------------------------------------------------------------------- cubes
def source_range(scene: RawScene, kept: np.ndarray) -> np.ndarray:
    """[2, bands]: the raw min and max of each kept band of `scene`."""
    out = np.zeros((2, len(kept)), dtype=np.float32)
    with BandReader(scene.cube) as reader:
        for i, b in enumerate(kept):
            band = reader.read(int(b))
            check_finite(band, f"{scene.cube.path}: band {int(b)}")
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
            check_finite(band, f"{scene.cube.path}: band {int(b)}")
            cube[i] = (band - lo[i]) / span[i] if hi[i] > lo[i] else 0.0
    return cube


# --------------------------------------------------------------------------- the stage
class PreparedPair:
    """What adapt_prepare writes for one pair, before writing it."""

    def __init__(self, name: str, source: RawScene, target: RawScene | None, masks: PairMasks, params: Params):
        self.name, self.source, self.target, self.masks = name, source, target, masks
        self.kept = kept_bands(source.n_bands, params.data.removed_band_indices())
        self.band_range = source_range(source, self.kept)


def open_pairs(params: Params, paths: Paths) -> list[PreparedPair]:
    """Every pair of adapt.pairs, opened and checked before anything is written."""
    pairs = []
    for name in params.adapt.pairs:
        if name == "two_scenes":
            source, target = open_two_scenes(params, paths)
            masks, where = two_scene_masks(source, target), "adapt.source_dir/target_dir"
            check_tile(params, source, target)
        else:
            source, region = open_one_scene(params, paths)
            target, masks, where = None, one_scene_masks(source, region), "adapt.shadow_dir"
            check_tile(params, source)
        check_masks(masks, params, where)
        pairs.append(PreparedPair(name, source, target, masks, params))
    return pairs


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns every pair's meta.json content."""
    cfg = params.adapt
    pairs = open_pairs(params, paths)
    metas = {}
    with staged_outputs(paths.adapt_prepared, paths.adapt_target_labels) as (prepared, labels):
        for pair in pairs:
            files = paths.adapt_prepared_files(pair.name, prepared)
            files.directory.mkdir(parents=True)
            m = pair.masks
            source_train, source_val = validation_split(m.source_train, cfg.val_fraction, params.seed)
            np.save(files.source_cube, scaled_cube(pair.source, pair.kept, pair.band_range))
            if pair.target is not None:
                np.save(files.target_cube, scaled_cube(pair.target, pair.kept, pair.band_range))
            for path, mask in (
                (files.source_train, source_train),
                (files.source_val, source_val),
                (files.source_test, m.source_test),
                (files.target_pool, m.target_pool),
                (files.target_test, m.target_test),
                (files.target_region, m.target_region),
            ):
                np.save(path, mask)
            np.save(files.band_range, pair.band_range)
            # Nothing here depends on the labels level: a new level leaves these bytes, and S, unchanged.
            meta = {
                "pair": pair.name,
                "one_scene": pair.target is None,
                "class_names": params.data.class_names,
                "source_dir": str(
                    pair.source.directory.relative_to(paths.root)
                    if pair.source.directory.is_relative_to(paths.root)
                    else pair.source.directory
                ),
                "source_shape": [len(pair.kept), *pair.source.spatial_shape],
                "target_shape": [len(pair.kept), *(pair.target or pair.source).spatial_shape],
                "source_train_pixels": int((m.source_train >= 0).sum()),
                "target_pool_pixels": int((m.target_pool >= 0).sum()),
                "target_test_pixels": int((m.target_test >= 0).sum()),
                "source_test_pixels": int((m.source_test >= 0).sum()),
            }
            write_json(files.meta, meta)
            few = np.stack([few_labels(m.target_pool, cfg.target_labels_per_class, s) for s in seeds(params)])
            np.save(paths.adapt_few_labels(pair.name, labels), few)
            metas[pair.name] = meta
    return metas
