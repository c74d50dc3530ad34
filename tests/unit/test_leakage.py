"""The buffer against spatial leakage: the pure functions, the split stage's use of them, and the sweep."""

import json
import shutil

import numpy as np
import pytest

from hsixai.config import params_from_dict
from hsixai.data import split
from hsixai.data.split import buffer_dev, random_stratified_split, spatial_split
from hsixai.errors import HsixaiError
from hsixai.leakage import drop_near, min_distance_to, near, patch_leakage
from hsixai.paths import Paths
from hsixai.sweep import points

from ..conftest import TINY_BUFFER, TINY_TRAIN, tiny_params

NAMES = ["a", "b", "c", "d"]


def _parcels(seed: int, shape=(40, 56), k: int = 4, labelled: float = 0.7) -> np.ndarray:
    """A random label map of rectangular parcels (2..9 px a side), some unlabelled (-1)."""
    rng = np.random.default_rng(seed)
    labels = np.full(shape, -1, dtype=np.int8)
    for _ in range(shape[0] * shape[1] // 12):
        h, w = rng.integers(2, 10, size=2)
        r, c = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
        labels[r : r + h, c : c + w] = rng.integers(0, k) if rng.random() < labelled else -1
    return labels


def _brute_distance(mask: np.ndarray) -> np.ndarray:
    """Chebyshev distance of every pixel to the nearest True pixel of `mask` (inf if none), by brute force."""
    pts = np.argwhere(mask)
    grid = np.indices(mask.shape).reshape(2, -1).T
    if not len(pts):
        return np.full(mask.shape, np.inf)
    return np.abs(grid[:, None, :] - pts[None, :, :]).max(axis=2).min(axis=1).reshape(mask.shape).astype(float)


# --------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("distance", [0, 1, 3, 10])
def test_near_is_chebyshev_distance_at_most(seed, distance):
    mask = np.random.default_rng(seed).random((23, 31)) < 0.03
    assert np.array_equal(near(mask, distance), _brute_distance(mask) <= distance)


def test_near_edge_cases():
    empty = np.zeros((5, 6), dtype=bool)
    assert not near(empty, 3).any()
    one = empty.copy()
    one[0, 0] = True
    assert near(one, 1).sum() == 4  # the corner pixel's 3 x 3 square, cut by the border
    with pytest.raises(ValueError):
        near(one, -1)


@pytest.mark.parametrize("seed", range(3))
def test_min_distance_to_matches_brute_force(seed):
    labels = _parcels(seed)
    train, dev = spatial_split(labels, 4, 0.6, "left")
    expected = _brute_distance(train >= 0)[dev >= 0].min()
    assert min_distance_to(train, dev) == expected
    assert min_distance_to(train, np.full_like(dev, -1)) is None


def test_patch_leakage_on_a_hand_made_map():
    """Train: class 0 at (5, 5), class 1 at (5, 12). Targets with known Chebyshev distances:
    A=(5, 7) class 0: 2 to its class, 5 to class 1; B=(5, 9) class 1: 3 to its class, 4 to class 0;
    C=(15, 15) class 0: 10 to both; D=(8, 5) class 1: 7 to its class, 3 to class 0."""
    train = np.full((20, 20), -1, dtype=np.int8)
    train[5, 5], train[5, 12] = 0, 1
    targets = np.full_like(train, -1)
    targets[5, 7], targets[5, 9], targets[15, 15], targets[8, 5] = 0, 1, 0, 1
    expected = {  # patch size: (same class, any class) shares of the 4 targets
        1: (0, 0),
        3: (0, 0),
        5: (1 / 4, 1 / 4),
        7: (2 / 4, 3 / 4),
        9: (2 / 4, 3 / 4),
        13: (2 / 4, 3 / 4),
        15: (3 / 4, 3 / 4),
        19: (3 / 4, 3 / 4),
        21: (1, 1),
    }
    for p, (same, any_) in expected.items():
        got = patch_leakage(train, targets, p, 2)
        assert got == {"same_class": pytest.approx(same), "any_class": pytest.approx(any_)}, p
    assert patch_leakage(train, np.full_like(train, -1), 5, 2) == {"same_class": None, "any_class": None}
    for bad in (0, 4, -3):
        with pytest.raises(ValueError):
            patch_leakage(train, targets, bad, 2)


@pytest.mark.parametrize("seed", range(3))
def test_patch_leakage_matches_brute_force_on_random_maps(seed):
    labels = _parcels(seed)
    train, dev = spatial_split(labels, 4, 0.6, "left")
    any_dist = _brute_distance(train >= 0)
    for p in (3, 7, 15):
        r = p // 2
        same = sum((_brute_distance(train == k)[dev == k] <= r).sum() for k in range(4))
        expected_any = (any_dist[dev >= 0] <= r).sum()
        got = patch_leakage(train, dev, p, 4)
        n = (dev >= 0).sum()
        assert got["same_class"] == pytest.approx(same / n) and got["any_class"] == pytest.approx(expected_any / n)
        assert got["same_class"] <= got["any_class"]


def test_drop_near_partitions_the_labels():
    labels = _parcels(7)
    train, dev = spatial_split(labels, 4, 0.6, "top")
    kept, dropped = drop_near(dev, train, 2)
    assert not np.any((kept >= 0) & (dropped >= 0))
    assert np.array_equal(np.where(kept >= 0, kept, dropped), dev)
    assert min_distance_to(train, kept) > 2
    assert np.all(_brute_distance(train >= 0)[dropped >= 0] <= 2)


# --------------------------------------------------------------------------- the buffered dev, both strategies
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("buffer", [0, 1, 2, 4])
@pytest.mark.parametrize("strategy", ["spatial", "random_stratified"])
def test_no_dev_pixel_within_the_buffer_of_a_train_pixel(seed, buffer, strategy):
    """Property: whatever the map, the buffered dev keeps no pixel within `buffer` of any train pixel and
    loses no pixel beyond it; a class left without dev pixels is a one-line error naming it and the buffer."""
    labels = _parcels(seed)
    if strategy == "spatial":
        train, dev = spatial_split(labels, 4, 0.6, ["left", "right", "top", "bottom"][seed % 4], NAMES)
    else:
        train, dev = random_stratified_split(labels, 4, 0.6, np.random.default_rng(seed), NAMES)
    dist = _brute_distance(train >= 0)
    survivors = np.bincount(dev[(dev >= 0) & (dist > buffer)], minlength=4)
    if (survivors == 0).any():
        k = int(np.flatnonzero(survivors == 0)[0])
        with pytest.raises(
            HsixaiError,
            match=rf"class {k} \({NAMES[k]}\): split.buffer={buffer} drops all "
            rf"{(dev == k).sum()} dev pixels",
        ) as err:
            buffer_dev(train, dev, buffer, NAMES, str(buffer), strategy)
        assert "\n" not in str(err.value)
        return
    kept, dropped = buffer_dev(train, dev, buffer, NAMES, str(buffer), strategy)
    assert np.array_equal(kept >= 0, (dev >= 0) & (dist > buffer))
    assert np.array_equal(dropped >= 0, (dev >= 0) & (dist <= buffer))
    assert min_distance_to(train, kept) > buffer
    assert buffer > 0 or not (dropped >= 0).any()  # train and dev are disjoint: 0 drops nothing
    assert np.array_equal(kept[kept >= 0], dev[kept >= 0])


def test_random_stratified_with_a_buffer_explains_itself():
    labels = _parcels(0)
    train, dev = random_stratified_split(labels, 4, 0.6, np.random.default_rng(0), NAMES)
    with pytest.raises(HsixaiError, match="random_stratified puts dev pixels next to train pixels"):
        buffer_dev(train, dev, 3, NAMES, "3", "random_stratified")


# --------------------------------------------------------------------------- params
@pytest.mark.parametrize(
    "buffer, sizes, expected",
    [("auto", [3, 5, 7, 9], 4), ("auto", [5, 21, 7], 10), ("auto", [3], 1), (0, [3, 21], 0), (6, [3, 5], 6)],
)
def test_buffer_resolves(buffer, sizes, expected):
    params = params_from_dict({"split": {"buffer": buffer}, "sweep": {"patch_sizes": sizes}})
    assert params.split_buffer == params.split.resolve_buffer(sizes) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        (-1, "expected a non-negative integer or 'auto', found -1"),
        (2.5, "expected an integer or 'auto', found 2.5"),
        ("big", "expected an integer or 'auto', found 'big'"),
        ("4", "found '4'"),
        (True, "found True"),
        (None, "found None"),
    ],
)
def test_bad_buffer_names_the_parameter(value, fragment):
    with pytest.raises(HsixaiError) as err:
        params_from_dict({"split": {"buffer": value}})
    assert "split.buffer" in str(err.value) and fragment in str(err.value) and "\n" not in str(err.value)


def test_a_profile_sweep_gets_the_buffer_of_its_largest_patch(tmp_path):
    """A profile whose sweep has larger patches than params.yaml's pins its resolved buffer on every experiment."""
    from hsixai.config import load_profile

    (tmp_path / "big.yaml").write_text("sweep:\n  patch_sizes: [5, 13, 21]\n")
    workspace = params_from_dict({})
    for model, patch, extra in points(workspace, load_profile(tmp_path / "big.yaml", workspace)):
        resolved = params_from_dict({"model": model, "patch_size": patch, "split": {"buffer": extra["split.buffer"]}})
        assert resolved.split_buffer == 21 // 2 == 10
        assert patch // 2 <= resolved.split_buffer
    assert all("split.buffer" not in extra for _, _, extra in points(params_from_dict({})))


# --------------------------------------------------------------------------- the split stage on the tiny scene
def _split_again(root, **overrides):
    params = params_from_dict(tiny_params(**{"train": TINY_TRAIN, **overrides}))
    return split.run(params, Paths.at(root), progress=False)


def test_tiny_scene_buffer_is_workable(prepared_root):
    """The tests' tiny buffer leaves every class at least 10 dev and 10 leak-free test pixels."""
    summary = json.loads((prepared_root / "data/split/split.json").read_text())
    assert summary["buffer"] == TINY_BUFFER
    assert min(summary["pixels"]["dev"].values()) >= 10
    assert min(summary["pixels"]["test_leakfree"].values()) >= 10 and summary["leakfree_classes_too_few"] == []


def test_split_stage_writes_the_buffered_split_and_the_leakfree_subset(prepared_root):
    paths = Paths.at(prepared_root)
    train = np.load(paths.split_dir / "train_labels.npy")
    dev = np.load(paths.split_dir / "dev_labels.npy")
    lf = np.load(paths.split_dir / "test_leakfree_labels.npy")
    test = np.load(paths.prepared_dir / "test_labels.npy")
    assert lf.dtype == np.int8 and lf.shape == test.shape
    assert min_distance_to(train, dev) > TINY_BUFFER and min_distance_to(train, lf) > TINY_BUFFER
    # every test pixel beyond the buffer is in the subset, with its class; none within it
    beyond = (test >= 0) & (_brute_distance(train >= 0) > TINY_BUFFER)
    assert np.array_equal(lf >= 0, beyond) and np.array_equal(lf[beyond], test[beyond])
    summary = json.loads((paths.split_dir / "split.json").read_text())
    info = json.loads((paths.split_dir / "leakfree.json").read_text())
    count = lambda m: np.bincount(m[m >= 0], minlength=6).tolist()  # noqa: E731
    assert list(summary["pixels"]["test_leakfree"].values()) == count(lf)
    assert list(info["n_test_leakfree_per_class"].values()) == count(lf) and info["buffer"] == TINY_BUFFER
    prepared = np.load(paths.prepared_files().training_mask)
    assert list(summary["pixels"]["dev_dropped_by_buffer"].values()) == count(
        np.where((prepared >= 0) & (train < 0) & (dev < 0), prepared, -1)
    )
    assert sum(summary["pixels"]["dev_dropped_by_buffer"].values()) > 0  # the buffer does something here


def test_leakfree_subset_does_not_depend_on_patch_size(prepared_root, tmp_path):
    """One split serves every point: the split stage's outputs are byte-identical whatever patch_size is."""
    outputs = {}
    for p in (3, 5, 9, 15):
        root = tmp_path / f"p{p}"
        shutil.copytree(prepared_root, root)
        _split_again(root, patch_size=p)
        outputs[p] = {f.name: f.read_bytes() for f in sorted((root / "data/split").iterdir())}
    assert "test_leakfree_labels.npy" in outputs[3]
    assert all(outputs[p] == outputs[3] for p in outputs)


def test_auto_buffer_follows_the_sweep_and_too_few_is_reported(prepared_root, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(prepared_root, root)
    small = _split_again(root, split={"buffer": "auto"}, sweep={"patch_sizes": [3]})
    assert small["buffer"] == 1 and small["buffer_setting"] == "auto"
    lf = small["pixels"]["test_leakfree"]
    # Ask for more than the smallest class has: it is reported (warning, split.json, leakfree.json), not an error.
    smallest = min(lf, key=lf.get)
    summary = _split_again(
        root, split={"buffer": "auto", "min_leakfree_pixels": lf[smallest] + 1}, sweep={"patch_sizes": [3]}
    )
    assert smallest in summary["leakfree_classes_too_few"]
    assert (
        json.loads((root / "data/split/leakfree.json").read_text())["classes_too_few"]
        == summary["leakfree_classes_too_few"]
    )
    assert f"({smallest}) has {lf[smallest]} leak-free test pixels" in caplog.text
    # a larger sweep means a larger buffer: fewer (never more) leak-free and dev pixels in every class
    larger = _split_again(root, split={"buffer": "auto"}, sweep={"patch_sizes": [3, 5]})
    assert larger["buffer"] == 2
    for group in ("test_leakfree", "dev"):
        assert all(larger["pixels"][group][n] <= small["pixels"][group][n] for n in lf)


def test_macro_scores_over_chosen_classes():
    from hsixai.metrics import classification_metrics

    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    every = classification_metrics(y_true, y_pred, 3)
    chosen = classification_metrics(y_true, y_pred, 3, macro_classes=[0, 1])
    f1 = every["f1_per_class"]  # 0: TP 2, FP 1, FN 1 -> 2/3; 1: TP 2, FP 1, FN 0 -> 4/5; 2: 0
    assert f1 == pytest.approx([2 / 3, 4 / 5, 0])
    assert chosen["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert every["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 3)
    assert chosen["aa"] == pytest.approx((2 / 3 + 1) / 2) and every["aa"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert chosen["oa"] == every["oa"] == pytest.approx(4 / 6) and chosen["kappa"] == every["kappa"]
    nothing = classification_metrics(y_true, y_pred, 3, macro_classes=[])
    assert np.isnan(nothing["f1_macro"]) and np.isnan(nothing["aa"])
