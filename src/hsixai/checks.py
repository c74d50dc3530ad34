"""Input checks written once: one function per check, each naming its input in the one-line error it raises.

`name` starts the message: a file, or a file and what it holds ("raw/train_crops.npy: training mask"), or a
parameter. Each check raises HsixaiError (one line, exit 2 at the CLI) with what was expected and what was
found. The shape and dtype checks read only `.shape` and `.dtype`, so they take headers too (io.NpyInfo,
formats.Stored, h5py datasets) and can refuse a file before its data are read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import HsixaiError

_KIND_WORDS = {"fiu": "a numeric", "iu": "an integer", "f": "a floating-point"}


def check_array(
    array: Any, name: str, ndim: int | None = None, kinds: str | None = None, shape: tuple[int, ...] | None = None
) -> None:
    """Number of dimensions, dtype kind (NumPy's letters: 'f' float, 'i'/'u' integer, 'b' bool) and shape."""
    if ndim is not None and len(array.shape) != ndim:
        raise HsixaiError(f"{name}: expected a {ndim}-D array, found shape {tuple(array.shape)}")
    if kinds is not None and array.dtype.kind not in kinds:
        raise HsixaiError(f"{name}: expected dtype kind {kinds!r}, found {array.dtype}")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise HsixaiError(f"{name}: expected shape {tuple(shape)}, found {tuple(array.shape)}")


def check_cube(array: Any, name: str, layout: str = "", kinds: str = "fiu") -> None:
    """A 3-D cube of dtype kind in `kinds` with no empty axis; `layout` (e.g. "[bands, H, W]") names its axes."""
    if len(array.shape) != 3:
        axes = f" {layout}" if layout else ""
        raise HsixaiError(f"{name}: expected a 3-D cube{axes}, found shape {tuple(array.shape)}")
    if array.dtype.kind not in kinds:
        raise HsixaiError(
            f"{name}: expected {_KIND_WORDS.get(kinds, f'a {kinds!r}-kind')} cube, found dtype {array.dtype}"
        )
    if min(array.shape) < 1:
        raise HsixaiError(f"{name}: expected a non-empty cube, found shape {tuple(array.shape)}")


def check_mask_shape(mask: Any, spatial: tuple[int, ...], name: str) -> None:
    """A map [H, W] on the cube's grid: its shape is the cube's spatial shape `spatial`."""
    if tuple(mask.shape) != tuple(spatial):
        raise HsixaiError(f"{name}: expected shape {tuple(spatial)} (the cube's H x W), found {tuple(mask.shape)}")


def check_labels(mask: np.ndarray, n_classes: int, name: str, why: str) -> None:
    """Labels 0..n_classes (0 = unlabelled); `why` says where n_classes comes from, e.g. "--classes"."""
    bad = (mask < 0) | (mask > n_classes)
    if bad.any():
        values = np.unique(mask[bad])[:5].tolist()
        raise HsixaiError(f"{name}: expected labels 0..{n_classes} ({why}), found {values}")


def check_labels_have_data(mask: np.ndarray, nodata: np.ndarray, name: str) -> None:
    """No labelled pixel (mask > 0) where the acquisition has no data (nodata True); both [H, W]."""
    bad = (mask > 0) & nodata
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise HsixaiError(
            f"{name}: expected labels only where the cube has data, found {int(bad.sum())} "
            f"labelled pixels on no-data pixels (first at row {row}, column {col})"
        )


def non_finite(array: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """bool, `array`'s shape: True where a value is NaN or +-Inf and `ignore` (broadcast against it) is False."""
    bad = ~np.isfinite(array)
    if ignore is not None:
        bad &= ~ignore
    return bad


def check_finite(array: np.ndarray, name: str, ignore: np.ndarray | None = None) -> None:
    """No NaN or Inf in `array`, except where `ignore` is True (e.g. the pixels without data of a band [H, W])."""
    bad = non_finite(array, ignore)
    if bad.any():
        where = f" (first at {_position(np.argwhere(bad)[0])})" if bad.ndim else ""
        raise HsixaiError(f"{name} has {int(bad.sum())} NaN or Inf values{where}; expected finite values")


def check_finite_per_band(counts: np.ndarray, name: str) -> None:
    """For a cube checked in blocks: `counts` int [bands] holds the NaN or Inf values found in each band."""
    if counts.any():
        first = int(np.flatnonzero(counts)[0])
        raise HsixaiError(
            f"{name}: band {first} has {counts[first]} NaN or Inf values "
            f"({int((counts > 0).sum())} bands affected, {int(counts.sum())} values in all); "
            f"expected finite values"
        )


def check_length(values: np.ndarray, n: int, name: str, what: str) -> None:
    """A 1-D array of `n` values; `what` describes them, e.g. "wavelengths (one per band of hsi.npy)"."""
    if np.shape(values) != (n,):
        raise HsixaiError(f"{name}: expected {n} {what}, found {np.size(values)}")


def check_positive_finite(values: np.ndarray, name: str, what: str) -> None:
    """Every value finite and > 0; `what` describes them, e.g. "wavelengths in nm"."""
    values = np.asarray(values)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise HsixaiError(
            f"{name}: expected positive finite {what}, found {int(bad.sum())} NaN, Inf or values <= 0 "
            f"(e.g. {values[bad][:3].tolist()})"
        )


def _position(index: np.ndarray) -> str:
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}"
    if len(index) == 1:
        return f"index {index[0]}"
    return f"index {tuple(int(i) for i in index)}"
