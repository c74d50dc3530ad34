import json

import numpy as np

from hsixai.config import params_from_dict
from hsixai.data import prepare, split, synthetic
from hsixai.paths import Paths

from ..conftest import tiny_params


def _run_stages(root, **overrides):
    params = params_from_dict(tiny_params(**overrides))
    paths = Paths.at(root)
    synthetic.run(params, paths, progress=False)
    prepare.run(params, paths, progress=False)
    split.run(params, paths, progress=False)
    return paths


def test_default_band_list_gives_174_bands(tmp_path):
    paths = _run_stages(tmp_path)
    cube = np.load(paths.prepared_cube, mmap_mode="r")
    assert cube.shape == (174, 48, 48) and cube.dtype == np.float32
    raw_wl = np.load(paths.synthetic_dir / "wavelengths.npy")
    bands = np.load(paths.prepared_dir / "bands.npy")
    assert len(bands) == 174 and not set(bands) & {0, 10, 57, 63, 145, 162, 210, 233}
    assert np.array_equal(np.load(paths.prepared_dir / "wavelengths.npy"), raw_wl[bands])


def test_each_band_is_min_max_scaled(tmp_path):
    paths = _run_stages(tmp_path)
    cube = np.load(paths.prepared_cube)
    raw = np.load(paths.synthetic_dir / "hsi.npy")
    bands = np.load(paths.prepared_dir / "bands.npy")
    assert np.allclose(cube.min(axis=(1, 2)), 0.0) and np.allclose(cube.max(axis=(1, 2)), 1.0)
    b = raw[bands[7]]
    assert np.allclose(cube[7], (b - b.min()) / (b.max() - b.min()), atol=1e-6)
    assert np.allclose(np.load(paths.prepared_dir / "band_range.npy")[:, 7], [b.min(), b.max()])


def test_labels_become_zero_based(tmp_path):
    paths = _run_stages(tmp_path)
    raw = np.load(paths.synthetic_dir / "train_crops.npy")
    train = np.load(paths.prepared_files().training_mask)
    assert train.dtype == np.int8
    assert np.array_equal(train, raw.astype(int) - 1)
    assert set(np.unique(train)) == set(range(-1, 6))


def test_custom_band_list(tmp_path):
    paths = _run_stages(tmp_path, data={"remove_bands": [0, "5-9", 233]})
    assert np.load(paths.prepared_cube, mmap_mode="r").shape[0] == 234 - 7
    assert json.loads((paths.prepared_dir / "meta.json").read_text())["removed_bands"] == 7


def test_split_outputs(tmp_path):
    paths = _run_stages(tmp_path)
    train = np.load(paths.split_dir / "train_labels.npy")
    dev = np.load(paths.split_dir / "dev_labels.npy")
    xai = np.load(paths.split_dir / "xai_labels.npy")
    labels = np.load(paths.prepared_files().training_mask)
    # train and dev keep their pixels' classes; what is in neither is the dev the buffer dropped
    both = np.where(train >= 0, train, dev)
    assert np.array_equal(both[both >= 0], labels[both >= 0]) and not np.any((train >= 0) & (dev >= 0))
    dropped = json.loads((paths.split_dir / "split.json").read_text())["pixels"]["dev_dropped_by_buffer"]
    left_out = labels[(labels >= 0) & (both < 0)]
    assert np.bincount(left_out, minlength=6).tolist() == list(dropped.values())
    assert np.all(dev[xai >= 0] == xai[xai >= 0])
    stats = np.load(paths.split_dir / "band_stats.npz")
    cube = np.load(paths.prepared_cube)
    pixels = cube[:, train >= 0]
    assert np.allclose(stats["mean"], pixels.mean(axis=1), atol=1e-5)
    assert np.allclose(stats["std"], pixels.std(axis=1), atol=1e-5)
    for fig in ("prepare/false_colour.png", "prepare/class_spectra.png", "split/masks.png"):
        assert (tmp_path / "figures" / fig).stat().st_size > 10_000


def test_rerun_gives_identical_outputs(tmp_path):
    a = _run_stages(tmp_path / "a")
    b = _run_stages(tmp_path / "b")
    for name in ("cube.npy", "training_mask.npy", "band_range.npy"):
        assert (a.prepared_dir / name).read_bytes() == (b.prepared_dir / name).read_bytes()
    for name in ("train_labels.npy", "dev_labels.npy", "xai_labels.npy"):
        assert (a.split_dir / name).read_bytes() == (b.split_dir / name).read_bytes()
