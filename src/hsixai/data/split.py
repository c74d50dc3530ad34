"""`split` stage: training mask -> train and dev, the leak-free test subset, band statistics, the xAI sample.

The default split is spatial: per class, train takes the fraction
`split.train_size` of the class's pixels from one side of the scene, and dev
the rest. That alone does not stop leakage: a patch is a window, and the
window of a dev pixel near the cut (or near another class's train pixels,
whose cut lies elsewhere) holds train pixels, so a model is partly scored on
spectra it was trained on, more so for larger patches. Hence the buffer
(`split.buffer`, docs/leakage.md): dev pixels within that Chebyshev distance
of any train pixel are dropped, whatever the strategy, and the test pixels
farther than it from every train pixel form the leak-free test subset. The
buffer never depends on the point's own `patch_size` ("auto" is the radius of
the largest patch in `sweep.patch_sizes`), so one split, and one leak-free
subset, serves every point of a sweep.

Outputs in data/split/:
    train_labels.npy          int8 [H, W], -1 outside train
    dev_labels.npy            int8 [H, W], -1 outside dev (the buffered dev)
    xai_labels.npy            int8 [H, W], -1 outside the xAI sample (a subset of dev)
    test_leakfree_labels.npy  int8 [H, W], -1 outside the leak-free test subset
    leakfree.json             the buffer and the leak-free subset's size per class (read by evaluate)
    band_stats.npz            mean, std float32 [bands] over train pixels
    split.json                the buffer, pixel counts per class and set, dev pixels dropped by the buffer
Figure: figures/split/masks.png
"""

from __future__ import annotations

import json
import logging

import numpy as np
from tqdm import tqdm

from .. import plots
from ..config import Params
from ..errors import HsixaiError
from ..io import BandReader, inspect_npy, load_npy, staged_outputs, write_json
from ..leakage import drop_near
from ..paths import Paths

log = logging.getLogger(__name__)


def spatial_split(
    labels: np.ndarray, n_classes: int, train_size: float, side: str, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, cut at the column (left/right) or row (top/bottom) that puts the share of
    pixels on `side` closest to `train_size`. Returns (train, dev) label maps, -1 elsewhere."""
    names = names or [str(k) for k in range(n_classes)]
    train = np.full(labels.shape, -1, dtype=np.int8)
    dev = np.full(labels.shape, -1, dtype=np.int8)
    axis = 1 if side in ("left", "right") else 0
    for k in range(n_classes):
        rows, cols = np.nonzero(labels == k)
        _require_pixels(len(rows), k, names)
        coord = (cols if axis == 1 else rows).astype(np.int64)
        if side in ("right", "bottom"):
            coord = -coord  # the train side comes first in sorted order
        lines, counts = np.unique(coord, return_counts=True)
        if len(lines) < 2:
            what = "column" if axis == 1 else "row"
            raise HsixaiError(
                f"class {k} ({names[k]}): all {len(rows)} training pixels lie in one {what}; "
                f"a spatial split to the {side} needs at least two (use split.strategy: random_stratified)"
            )
        share = np.cumsum(counts)[:-1] / len(coord)  # train share if cut after each line (dev never empty)
        cut = lines[int(np.argmin(np.abs(share - train_size)))]
        is_train = coord <= cut
        train[rows[is_train], cols[is_train]] = k
        dev[rows[~is_train], cols[~is_train]] = k
    return train, dev


def random_stratified_split(
    labels: np.ndarray, n_classes: int, train_size: float, rng: np.random.Generator, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a random `train_size` share of pixels for train and the rest for dev."""
    names = names or [str(k) for k in range(n_classes)]
    train = np.full(labels.shape, -1, dtype=np.int8)
    dev = np.full(labels.shape, -1, dtype=np.int8)
    for k in range(n_classes):
        flat = np.flatnonzero(labels.ravel() == k)
        _require_pixels(len(flat), k, names)
        flat = rng.permutation(flat)
        n_train = int(np.clip(round(train_size * len(flat)), 1, len(flat) - 1))
        train.ravel()[flat[:n_train]] = k
        dev.ravel()[flat[n_train:]] = k
    return train, dev


def _require_pixels(n: int, k: int, names: list[str]) -> None:
    if n < 2:
        raise HsixaiError(f"class {k} ({names[k]}) has {n} training pixels; train and dev need at least one each")


def buffer_dev(
    train: np.ndarray, dev: np.ndarray, buffer: int, names: list[str], buffer_setting: str, strategy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the dev pixels within Chebyshev distance `buffer` of any train pixel. Returns (dev, dropped)
    label maps int8 [H, W]; raises HsixaiError when a class is left without dev pixels."""
    kept, dropped = drop_near(dev, train, buffer)
    before, after = _per_class(dev, len(names)), _per_class(kept, len(names))
    for k, name in enumerate(names):
        if before[k] and not after[k]:
            hint = (
                "random_stratified puts dev pixels next to train pixels: use split.strategy: spatial, "
                "or split.buffer: 0 to accept the leakage"
                if strategy == "random_stratified"
                else "lower split.buffer (or sweep.patch_sizes for auto)"
            )
            raise HsixaiError(
                f"class {k} ({name}): split.buffer={buffer_setting} drops all {before[k]} dev pixels "
                f"(each within {buffer} px of one of the {int((train >= 0).sum())} train pixels); "
                f"expected at least one dev pixel per class; {hint}"
            )
    return kept, dropped


def leakfree_test(
    train: np.ndarray, test: np.ndarray, buffer: int, names: list[str], buffer_setting: str, min_pixels: int
) -> tuple[np.ndarray, list[str]]:
    """The test pixels farther than `buffer` from every train pixel (int8 [H, W], -1 elsewhere), and the
    names of the classes with fewer than `min_pixels` of them. A class with test pixels but no leak-free
    one is an error."""
    kept, _ = drop_near(test, train, buffer)
    before, after = _per_class(test, len(names)), _per_class(kept, len(names))
    too_few = []
    for k, name in enumerate(names):
        if before[k] and not after[k]:
            raise HsixaiError(
                f"class {k} ({name}): split.buffer={buffer_setting} leaves no leak-free test pixel "
                f"(all {before[k]} test pixels lie within {buffer} px of a train pixel); "
                f"expected at least one; lower split.buffer (or sweep.patch_sizes for auto)"
            )
        if after[k] < min_pixels:
            log.warning(
                "class %d (%s) has %d leak-free test pixels (of %d), fewer than split.min_leakfree_pixels="
                "%d: reported, but left out of the leak-free AA and macro F1",
                k,
                name,
                after[k],
                before[k],
                min_pixels,
            )
            too_few.append(name)
    return kept, too_few


def _per_class(labels: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(labels[labels >= 0], minlength=n_classes).astype(int).tolist()


def xai_sample(
    dev: np.ndarray, n_classes: int, per_class: int, rng: np.random.Generator, names: list[str]
) -> np.ndarray:
    """Up to `per_class` dev pixels per class, drawn without replacement. Label map, -1 elsewhere."""
    xai = np.full(dev.shape, -1, dtype=np.int8)
    for k in range(n_classes):
        flat = np.flatnonzero(dev.ravel() == k)
        if len(flat) < per_class:
            log.warning(
                "class %d (%s) has %d dev pixels, fewer than xai.samples_per_class=%d: using all of them",
                k,
                names[k],
                len(flat),
                per_class,
            )
        chosen = rng.choice(flat, size=min(per_class, len(flat)), replace=False)
        xai.ravel()[np.sort(chosen)] = k
    return xai


def band_statistics(
    cube_reader: BandReader, pixels: np.ndarray, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std (float32 [bands]) over the flat pixel indices `pixels`, one band at a time."""
    mean = np.zeros(cube_reader.n_bands, dtype=np.float64)
    std = np.zeros(cube_reader.n_bands, dtype=np.float64)
    for b in tqdm(range(cube_reader.n_bands), desc="split: band statistics", unit="band", disable=not progress):
        values = cube_reader.read(b).ravel()[pixels].astype(np.float64)
        mean[b], std[b] = values.mean(), values.std()
    # A constant band standardises to zeros rather than to NaN.
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns split.json's content."""
    prepared = paths.prepared_files()
    meta_path = prepared.meta
    if not meta_path.is_file():
        raise HsixaiError(f"{meta_path}: prepared data not found (run the prepare stage first)")
    try:
        prepared_names = json.loads(meta_path.read_text())["class_names"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise HsixaiError(f"{meta_path}: not a valid meta.json of the prepare stage ({exc}); re-run prepare") from None
    names = params.data.class_names
    if prepared_names != names:
        raise HsixaiError(
            f"params: data.class_names {names} differ from those the prepared data was made with "
            f"{prepared_names} (re-run prepare)"
        )
    cube = inspect_npy(paths.prepared_cube, "prepared cube")
    labels = load_npy(prepared.training_mask, "training labels", ndim=2, kinds="i", shape=cube.shape[1:])
    test = load_npy(prepared.test_labels, "test labels", ndim=2, kinds="i", shape=cube.shape[1:])
    k = len(names)
    cfg = params.split
    buffer = params.split_buffer
    setting = f"auto -> {buffer} (largest of sweep.patch_sizes // 2)" if cfg.buffer == "auto" else str(buffer)
    rng = np.random.default_rng(params.seed)
    if cfg.strategy == "spatial":
        train, dev = spatial_split(labels, k, cfg.train_size, cfg.train_side, names)
    else:
        train, dev = random_stratified_split(labels, k, cfg.train_size, rng, names)
    dev, dropped = buffer_dev(train, dev, buffer, names, setting, cfg.strategy)
    test_leakfree, too_few = leakfree_test(train, test, buffer, names, setting, cfg.min_leakfree_pixels)
    xai = xai_sample(dev, k, params.xai.samples_per_class, rng, names)

    with BandReader(cube) as reader:
        mean, std = band_statistics(reader, np.flatnonzero(train.ravel() >= 0), progress)

    count = lambda m: dict(zip(names, _per_class(m, k)))  # noqa: E731
    leakfree = {
        "buffer": buffer,
        "min_leakfree_pixels": cfg.min_leakfree_pixels,
        "n_test_leakfree_per_class": count(test_leakfree),
        "classes_too_few": too_few,
    }
    summary = {
        "strategy": cfg.strategy,
        "train_size": cfg.train_size,
        "train_side": cfg.train_side if cfg.strategy == "spatial" else None,
        "buffer": buffer,
        "buffer_setting": cfg.buffer,
        "pixels": {
            "train": count(train),
            "dev": count(dev),
            "dev_dropped_by_buffer": count(dropped),
            "test": count(test),
            "test_leakfree": count(test_leakfree),
            "xai": count(xai),
        },
        "leakfree_classes_too_few": too_few,
    }
    with staged_outputs(paths.split_dir, paths.figures_dir("split")) as (out, figs):
        files = paths.split_files(out)
        np.save(files.train_labels, train)
        np.save(files.dev_labels, dev)
        np.save(files.xai_labels, xai)
        np.save(files.test_leakfree_labels, test_leakfree)
        np.savez(files.band_stats, mean=mean, std=std)
        write_json(files.leakfree, leakfree)
        write_json(files.summary, summary)
        plots.label_maps(
            {
                "train": train,
                f"dev (buffer {buffer} px)": dev,
                f"dev dropped (within {buffer} px of train)": dropped,
                "test": test,
                f"test leak-free (> {buffer} px from train)": test_leakfree,
                "xAI sample": xai,
            },
            names,
            paths.figures("split", figs).masks,
            columns=3,
        )
    return summary
