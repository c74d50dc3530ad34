import json

import numpy as np
import pytest

from hsixai.config import SynthesizeConfig, params_from_dict
from hsixai.data import spectra, synthetic
from hsixai.paths import Paths

from ..conftest import TINY_SYNTHESIZE


def _make(tmp_path, seed=0, **cfg):
    out = tmp_path / f"scene-{seed}"
    synthetic.synthesize(SynthesizeConfig(**{**TINY_SYNTHESIZE, **cfg}), seed, out, progress=False)
    return {name: np.load(out / f"{name}.npy") for name in ("hsi", "train_crops", "test_crops", "wavelengths")}


def test_same_seed_gives_identical_files(tmp_path):
    a, b = _make(tmp_path / "a"), _make(tmp_path / "b")
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_other_seed_gives_another_scene(tmp_path):
    a, b = _make(tmp_path, seed=0), _make(tmp_path, seed=1)
    assert not np.array_equal(a["train_crops"], b["train_crops"])


def test_format_of_a_real_acquisition(tmp_path):
    scene = _make(tmp_path)
    cube = scene["hsi"]
    assert cube.dtype == np.float32 and cube.shape == (234, 48, 48)
    assert cube.min() >= 0.0 and cube.max() <= 1.0
    assert scene["wavelengths"].shape == (234,)
    assert 395 <= scene["wavelengths"][0] < 420 and 2450 < scene["wavelengths"][-1] <= 2510
    assert np.all(np.diff(scene["wavelengths"]) > 0)
    for mask in ("train_crops", "test_crops"):
        assert scene[mask].shape == (48, 48)
        assert set(np.unique(scene[mask])) == set(range(7)), "every crop and unlabelled must be present"


def test_train_and_test_pixels_never_overlap(tmp_path):
    scene = _make(tmp_path)
    assert not np.any((scene["train_crops"] > 0) & (scene["test_crops"] > 0))


def test_train_and_test_lie_on_separate_parcels():
    """Every surveyed parcel is wholly train or wholly test."""
    cfg = SynthesizeConfig(**TINY_SYNTHESIZE)
    rng = np.random.default_rng(3)
    layout = synthetic._layout(cfg, rng)
    train, test = synthetic._labels(cfg, layout, rng)
    s = cfg.subpixels
    centre = layout.parcel[s // 2 :: s, s // 2 :: s]
    in_train = set(np.unique(centre[train > 0]))
    in_test = set(np.unique(centre[test > 0]))
    assert in_train and in_test and not in_train & in_test


def test_removed_bands_are_the_noisy_ones():
    wl = spectra.prisma_wavelengths()
    removed = params_from_dict({}).data.removed_band_indices()
    noise = spectra.noise_std(wl)
    kept = np.setdiff1d(np.arange(234), removed)
    assert len(removed) == 60 and len(kept) == 174
    # The blue end, the VNIR/SWIR junction, the 1800-1950 nm water vapour and the SWIR end.
    for band_range in ((0, 10), (57, 63), (145, 162), (210, 233)):
        lo, hi = band_range
        assert np.median(noise[lo : hi + 1]) > 3 * np.median(noise[kept])
    assert 1790 <= wl[145] <= 1810 and 1940 <= wl[162] <= 1960  # the 1800-1950 nm water-vapour band


def test_mixed_pixels_exist_at_parcel_edges(tmp_path):
    """With sub-pixels, edge pixels are mixtures: some pixels' spectra lie between their neighbours'."""
    scene = _make(tmp_path)
    nir = scene["hsi"][int(np.argmin(np.abs(scene["wavelengths"] - 860)))]
    values = np.unique(np.round(nir, 2))
    assert len(values) > 20


def test_tree_crops_differ_in_texture_more_than_in_mean(tmp_path):
    """Oranges (2) and olives (6): close mean spectra, but olive groves are far more heterogeneous."""
    scene = _make(tmp_path, height=96, width=96)
    labels = np.maximum(scene["train_crops"], scene["test_crops"])
    for nm in (660, 860):
        band = scene["hsi"][int(np.argmin(np.abs(scene["wavelengths"] - nm)))]
        step = np.abs(np.diff(band, axis=1))  # differences between horizontal neighbours
        same = labels[:, 1:] == labels[:, :-1]
        roughness = {k: np.median(step[same & (labels[:, 1:] == k)]) for k in (2, 6)}
        assert roughness[6] > 2 * roughness[2], nm
        assert abs(band[labels == 6].mean() - band[labels == 2].mean()) < 0.03, nm


def test_stage_writes_scene_json(tmp_path):
    from ..conftest import tiny_params

    params = params_from_dict(tiny_params())
    synthetic.run(params, Paths.at(tmp_path), progress=False)
    summary = json.loads((tmp_path / "data/synthetic/scene.json").read_text())
    assert summary["shape"] == [234, 48, 48]
    assert all(n > 0 for n in summary["train_pixels"].values())


@pytest.mark.parametrize("bad", [{"height": 4}, {"subpixels": 0}, {"min_parcel": 20, "max_parcel": 10}])
def test_bad_sizes_are_rejected(bad):
    from hsixai.errors import HsixaiError

    with pytest.raises(HsixaiError):
        SynthesizeConfig(**{**TINY_SYNTHESIZE, **bad})
