import numpy as np
import pytest

from hsixai.data.split import random_stratified_split, spatial_split, xai_sample
from hsixai.errors import HsixaiError


def _random_labels(seed=0, shape=(40, 50), k=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, k, size=shape).astype(np.int8)
    return labels, k


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spatial_split_is_disjoint_per_class(side, seed):
    labels, k = _random_labels(seed)
    train, dev = spatial_split(labels, k, 0.6, side)
    axis = 1 if side in ("left", "right") else 0
    for c in range(k):
        t = np.nonzero(train == c)[axis]
        d = np.nonzero(dev == c)[axis]
        assert len(t) and len(d)
        if side in ("left", "top"):
            assert t.max() < d.min()
        else:
            assert t.min() > d.max()
    # A partition of the labelled pixels, each keeping its class.
    assert np.array_equal(np.where(train >= 0, train, dev), labels)
    assert not np.any((train >= 0) & (dev >= 0))


def test_spatial_split_share_is_close_to_train_size():
    labels, k = _random_labels(shape=(60, 200))
    train, _ = spatial_split(labels, k, 0.6, "left")
    for c in range(k):
        share = (train == c).sum() / (labels == c).sum()
        assert abs(share - 0.6) < 0.02


def test_spatial_split_needs_two_columns():
    labels = np.full((10, 10), -1, dtype=np.int8)
    labels[:, 3] = 0
    labels[:, 5:7] = 1
    with pytest.raises(HsixaiError, match="one column"):
        spatial_split(labels, 2, 0.6, "left", ["wheat", "rice"])
    train, dev = spatial_split(labels, 2, 0.6, "top", ["wheat", "rice"])  # ten rows: fine
    assert (train == 0).sum() == 6 and (dev == 0).sum() == 4


def test_random_stratified_split_is_seeded_and_stratified():
    labels, k = _random_labels()
    a = random_stratified_split(labels, k, 0.6, np.random.default_rng(5))
    b = random_stratified_split(labels, k, 0.6, np.random.default_rng(5))
    c = random_stratified_split(labels, k, 0.6, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    for cls in range(k):
        assert abs((a[0] == cls).sum() - round(0.6 * (labels == cls).sum())) <= 1


def test_class_with_one_pixel_is_an_error():
    labels = np.full((5, 5), -1, dtype=np.int8)
    labels[0, 0] = 0
    labels[2:4, 2:4] = 1
    with pytest.raises(HsixaiError, match=r"class 0 \(wheat\) has 1 training pixels"):
        spatial_split(labels, 2, 0.5, "left", ["wheat", "rice"])


def test_xai_sample_draws_from_dev_and_warns_when_short(caplog):
    labels, k = _random_labels(shape=(30, 30))
    _, dev = spatial_split(labels, k, 0.6, "left")
    names = [f"c{i}" for i in range(k)]
    xai = xai_sample(dev, k, 10, np.random.default_rng(0), names)
    assert np.all(dev[xai >= 0] == xai[xai >= 0])
    assert np.bincount(xai[xai >= 0], minlength=k).tolist() == [10] * k
    assert np.array_equal(xai, xai_sample(dev, k, 10, np.random.default_rng(0), names))
    many = xai_sample(dev, k, 10_000, np.random.default_rng(0), names)
    assert np.array_equal(many >= 0, dev >= 0)
    assert "fewer than xai.samples_per_class=10000" in caplog.text
