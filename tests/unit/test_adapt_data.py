"""Domain adaptation data: the synthetic target acquisition and one-scene pair, consistent scaling, nested few
labels, and bad input through the real CLI (exit 2, one line naming the parameter or file, nothing written)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hsixai.adapt.common import few_labels
from hsixai.adapt.data import scaled_cube, source_range, validation_split
from hsixai.cli import main
from hsixai.config import AdaptShadowConfig, AdaptSyntheticConfig, SynthesizeConfig
from hsixai.data import spectra, synthetic
from hsixai.data.readers import open_raw_scene

from ..conftest import tiny_params
from ..helpers import write_params

# The adapt tests' small raw scenes: 40 bands, of which prepare drops 4.
FEW_BANDS = {"synthesize": {"bands": 40}, "data": {"remove_bands": ["0-3"]}}

SCENE = SynthesizeConfig(height=32, width=32, bands=40, max_parcel=10, labelled_fraction=0.9)
TARGET = AdaptSyntheticConfig(height=32, width=32)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """A root holding a tiny source scene and its target acquisition, in the raw format."""
    root = tmp_path_factory.mktemp("pair")
    synthetic.synthesize(SCENE, 0, root / "source", progress=False)
    synthetic.synthesize_target(SCENE, TARGET, 0, root / "target", progress=False)
    return root


def test_target_acquisition_is_deterministic_and_really_different(pair, tmp_path):
    synthetic.synthesize_target(SCENE, TARGET, 0, tmp_path / "again", progress=False)
    for name in ("hsi.npy", "train_crops.npy", "test_crops.npy"):
        assert (pair / "target" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    source, target = np.load(pair / "source/hsi.npy"), np.load(pair / "target/hsi.npy")
    assert target.shape == source.shape
    assert not np.array_equal(np.load(pair / "source/train_crops.npy"), np.load(pair / "target/train_crops.npy"))
    # Every crop is labelled in the target, on disjoint train and test parcels.
    train, test = np.load(pair / "target/train_crops.npy"), np.load(pair / "target/test_crops.npy")
    assert set(np.unique(train[train > 0])) == set(np.unique(test[test > 0])) == set(range(1, 7))
    assert not ((train > 0) & (test > 0)).any()


def test_no_shift_no_light_change_gives_the_same_kind_of_scene(tmp_path):
    """With every shift at zero the target differs from the source only by being another area."""
    flat = AdaptSyntheticConfig(height=32, width=32, phenology_shift=0, gain=0, offset=0, shadow_fraction=0)
    shifted = synthetic.synthesize_target(SCENE, TARGET, 0, tmp_path / "a", progress=False)
    plain = synthetic.synthesize_target(SCENE, flat, 0, tmp_path / "b", progress=False)
    assert plain["acquisition"]["shadow_pixels"] == 0 and shifted["acquisition"]["shadow_pixels"] > 0
    a, b = np.load(tmp_path / "a/hsi.npy"), np.load(tmp_path / "b/hsi.npy")
    # Same parcels, other light: the long-wavelength end is darkened by the gain.
    assert a[-5:].mean() < b[-5:].mean()
    assert np.array_equal(np.load(tmp_path / "a/test_crops.npy"), np.load(tmp_path / "b/test_crops.npy"))


def test_target_is_scaled_with_the_source_range(pair):
    source = open_raw_scene(pair / "source", 6)
    target = open_raw_scene(pair / "target", 6)
    kept = np.arange(5, 30)
    rng = source_range(source, kept)
    scaled = scaled_cube(source, kept, rng)
    assert scaled.min() == 0 and scaled.max() == 1
    raw = np.load(pair / "target/hsi.npy")[kept]
    expected = (raw - rng[0][:, None, None]) / (rng[1] - rng[0])[:, None, None]
    np.testing.assert_allclose(scaled_cube(target, kept, rng), expected, rtol=1e-5, atol=1e-6)


def test_few_labels_are_deterministic_per_seed_and_nested_across_levels():
    rng = np.random.default_rng(0)
    train = rng.integers(-1, 3, size=(20, 20)).astype(np.int8)
    a, b, c = few_labels(train, 4, 7), few_labels(train, 4, 7), few_labels(train, 4, 8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(a[a >= 0]).tolist() == [4, 4, 4]
    assert np.array_equal(a[a >= 0], train[a >= 0]), "only labelled pixels, with their own class"
    more = few_labels(train, 20, 7)
    assert ((a >= 0) <= (more >= 0)).all(), "the 4 of a seed are among its 20"
    assert np.array_equal(few_labels(train, "all", 7), train)


def test_validation_split_partitions_each_class():
    train = np.random.default_rng(1).integers(-1, 3, size=(20, 20)).astype(np.int8)
    fit, val = validation_split(train, 0.25, 0)
    assert not ((fit >= 0) & (val >= 0)).any()
    assert np.array_equal(np.where(val >= 0, val, fit), train)
    assert set(np.unique(val[val >= 0])) == {0, 1, 2}


# --------------------------------------------------------------------------- bad input through the CLI
def _root(pair: Path, tmp_path: Path, adapt: dict | None = None) -> Path:
    root = tmp_path / "root"
    shutil.copytree(pair, root)
    write_params(
        root,
        tiny_params(
            **FEW_BANDS,
            adapt={
                "source_dir": "source",
                "target_dir": "target",
                "pairs": ["two_scenes"],
                "labels_sweep": [4, "all"],
                **(adapt or {}),
            },
        ),
    )
    return root


def _fails(root: Path, capsys, *needles: str) -> None:
    assert main(["--root", str(root), "--no-progress", "adapt_prepare"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("hsixai adapt_prepare: error: ")
    for needle in needles:
        assert needle in err, err
    assert not (root / "data/adapt/prepared").exists(), "nothing half-written"
    assert not list((root / "data/adapt").glob(".prepared.tmp-*")) if (root / "data/adapt").exists() else True


def test_good_pair_prepares(pair, tmp_path):
    root = _root(pair, tmp_path)
    assert main(["--root", str(root), "--no-progress", "adapt_prepare"]) == 0
    few = np.load(root / "data/adapt/target_labels/two_scenes.npy")
    assert few.shape == (2, 32, 32) and (np.bincount(few[0][few[0] >= 0]) == 3).all()
    prepared = root / "data/adapt/prepared/two_scenes"
    pool = np.load(prepared / "target_pool.npy")
    assert ((few[0] >= 0) <= (pool >= 0)).all() and (np.load(prepared / "target_region.npy") == 1).all()


def test_different_band_counts(pair, tmp_path, capsys):
    root = _root(pair, tmp_path)
    np.save(root / "target/hsi.npy", np.load(root / "target/hsi.npy")[:-2])
    np.save(root / "target/wavelengths.npy", np.load(root / "target/wavelengths.npy")[:-2])
    _fails(root, capsys, "adapt.target_dir", "38 bands", "40")


def test_different_class_sets(pair, tmp_path, capsys):
    root = _root(pair, tmp_path)
    for name in ("train_crops.npy", "test_crops.npy"):
        mask = np.load(root / "target" / name)
        np.save(root / "target" / name, np.where(mask == 4, 0, mask).astype(mask.dtype))
    _fails(root, capsys, "adapt.source_dir/target_dir", "only in the source ['rice']")


def test_too_few_target_labels(pair, tmp_path, capsys):
    root = _root(pair, tmp_path, {"target_labels_per_class": 5000})
    _fails(root, capsys, "adapt.target_labels_per_class", "at least 5000")


def test_tile_larger_than_the_scene(pair, tmp_path, capsys):
    root = _root(pair, tmp_path, {"tile": 64})
    _fails(root, capsys, "adapt.tile", "64", "32 x 32")


def test_bad_adapt_params_name_the_key(pair, tmp_path, capsys):
    root = _root(pair, tmp_path, {"d_target_pixels": "some"})
    _fails(root, capsys, "adapt.d_target_pixels", "labelled, all")
    root = _root(pair, tmp_path / "b", {"pairs": ["two_scenes", "houston"]})
    _fails(root, capsys, "adapt.pairs", "two_scenes, shadow")
    root = _root(pair, tmp_path / "c", {"labels_sweep": [50, "most"]})
    _fails(root, capsys, "adapt.labels_sweep[1]", "'all'")
    root = _root(pair, tmp_path / "d", {"labels_sweep": [5000]})
    _fails(root, capsys, "adapt.labels_sweep[0]", "at least 5000")


# --------------------------------------------------------------------------- the one-scene (shadow) pair
SHADOW = AdaptShadowConfig(height=48, width=48, shadow_fraction=0.4)


@pytest.fixture(scope="module")
def shadow_scene(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shadow")
    summary = synthetic.synthesize_shadow_scene(SCENE, SHADOW, 0, root / "scene", progress=False)
    return root, summary


def test_shadow_scene_is_the_sunlit_scene_scaled_in_the_shadow_only(shadow_scene, tmp_path):
    """No global gain or offset: outside the shadow's soft edge every value is the sunlit scene's; deep inside it,
    each band is the sunlit value times the diffuse-light factor, through the origin."""
    from scipy import ndimage

    root, summary = shadow_scene
    sunlit_cfg = replace(SCENE, height=SHADOW.height, width=SHADOW.width)
    synthetic.synthesize(sunlit_cfg, summary["scene_seed"], tmp_path / "sunlit", progress=False)
    sun, shade = np.load(tmp_path / "sunlit/hsi.npy"), np.load(root / "scene/hsi.npy")
    region = np.load(root / "scene/region.npy").astype(bool)
    assert summary["shadow_pixels"] == region.sum() and 0.3 < region.mean() < 0.5
    far = ~ndimage.binary_dilation(region, iterations=10)  # beyond the soft edge
    deep = ndimage.binary_erosion(region, iterations=4)
    assert far.sum() > 100 and deep.sum() > 50
    assert np.array_equal(shade[:, far], sun[:, far]), "in the sun the scene is untouched, bit for bit"
    dark = spectra.shadow_factor(np.load(root / "scene/wavelengths.npy"))
    slopes, offsets = [], []
    for b in range(0, sun.shape[0], 4):
        x, y = sun[b][deep], shade[b][deep]
        slope, offset = np.polyfit(x, y, 1)
        slopes.append(slope / dark[b])
        offsets.append(offset)
    assert np.median(slopes) == pytest.approx(1.0, abs=0.05)
    assert np.median(np.abs(offsets)) < 0.01, "no additive offset"
    for name in ("train_crops.npy", "test_crops.npy", "wavelengths.npy", "georef.json"):  # same ground, same grid
        assert (root / "scene" / name).read_bytes() == (tmp_path / "sunlit" / name).read_bytes()


SHADOW_PAIR = {
    **FEW_BANDS,
    "adapt": {"pairs": ["shadow"], "shadow_dir": "scene", "target_labels_per_class": 3, "labels_sweep": ["all"]},
}


def test_shadow_pair_labels_no_pixel_in_both_source_and_target(shadow_scene, tmp_path):
    root, _ = shadow_scene
    write_params(tmp_path, tiny_params(**SHADOW_PAIR))
    shutil.copytree(root / "scene", tmp_path / "scene")
    assert main(["--root", str(tmp_path), "--no-progress", "adapt_prepare"]) == 0
    prepared = tmp_path / "data/adapt/prepared/shadow"
    region = np.load(prepared / "target_region.npy") == 1
    source = [np.load(prepared / f"source_{n}.npy") >= 0 for n in ("train", "val", "test")]
    target = [np.load(prepared / f"target_{n}.npy") >= 0 for n in ("pool", "test")]
    few = np.load(tmp_path / "data/adapt/target_labels/shadow.npy") >= 0
    any_source, any_target = np.logical_or.reduce(source), np.logical_or.reduce([*target, *few])
    assert any_source.any() and any_target.any()
    assert not (any_source & any_target).any(), "no pixel is labelled in both source and target"
    assert not (any_source & region).any() and not (any_target & ~region).any()
    raw = np.load(tmp_path / "scene/train_crops.npy") > 0
    assert np.array_equal(source[0] | source[1], raw & ~region), "every sunlit training pixel trains S"
    assert not (prepared / "target_cube.npy").exists(), "one scene: the target is the source cube"
    assert json.loads((prepared / "meta.json").read_text())["one_scene"] is True


def test_shadow_pair_without_region_fails_in_one_line(shadow_scene, tmp_path, capsys):
    root, _ = shadow_scene
    write_params(tmp_path, tiny_params(**SHADOW_PAIR))
    shutil.copytree(root / "scene", tmp_path / "scene")
    (tmp_path / "scene/region.npy").unlink()
    _fails(tmp_path, capsys, "adapt.shadow_dir", "region.npy not found")


def test_mean_iou_by_hand():
    from hsixai.metrics import mean_iou

    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0 -> 0; class 3 absent
    assert mean_iou(y_true, y_pred, 4) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert mean_iou(y_true, y_true, 4) == 1.0
