"""Reading a raw acquisition directory, with every check that can be made before any work.

A raw directory holds, as NumPy files:
    hsi.npy          [bands, H, W] reflectance or radiance, any numeric dtype
    train_crops.npy  [H, W] integer labels, 0 = unlabelled, 1..K = classes
    test_crops.npy   [H, W] integer labels, same coding
    wavelengths.npy  [bands] band centres in nm (optional: band numbers are used without it)
    fwhm.npy         [bands] band widths in nm (optional, checked but not used by the pipeline yet)
    nodata.npy       bool [H, W], True where the acquisition has no data (optional): the cube's values
                     there are ignored (NaN allowed) and no label may fall there
    georef.json      the map grid (optional, see georef.py): without it the scene is on its pixel grid
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..checks import (
    check_cube,
    check_labels,
    check_labels_have_data,
    check_length,
    check_mask_shape,
    check_positive_finite,
)
from ..errors import HsixaiError
from ..io import NpyInfo, inspect_npy, load_npy
from .georef import Georef, read_georef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawScene:
    directory: Path
    cube: NpyInfo  # the cube is read band by band later; only its header is read here
    train: np.ndarray  # [H, W] int, 0 = unlabelled
    test: np.ndarray  # [H, W] int, 0 = unlabelled
    wavelengths: np.ndarray  # [bands] float32, nm (or band numbers, see wavelength_unit)
    wavelength_unit: str  # "nm" or "band number"
    nodata: np.ndarray | None = None  # bool [H, W], True = no data; None = every pixel has data
    georef: Georef | None = None  # the map grid; None = the pixel grid

    @property
    def n_bands(self) -> int:
        return self.cube.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return self.cube.shape[1], self.cube.shape[2]


def open_raw_scene(directory: Path, n_classes: int) -> RawScene:
    """Check the raw files' presence, shapes, dtypes and label values; load the masks."""
    if not directory.is_dir():
        raise HsixaiError(f"{directory}: raw data directory not found (data.raw_dir in params.yaml)")
    cube = inspect_npy(directory / paths.RAW_CUBE, "hyperspectral cube")
    check_cube(cube, str(cube.path), "[bands, H, W]")
    spatial = cube.shape[1:]
    train = _load_mask(directory / paths.RAW_TRAIN, "training mask", spatial, n_classes)
    test = _load_mask(directory / paths.RAW_TEST, "test mask", spatial, n_classes)

    wl_path = directory / paths.RAW_WAVELENGTHS
    if wl_path.exists():
        wavelengths = load_npy(wl_path, "wavelengths", ndim=1, kinds="fiu").astype(np.float32)
        check_length(wavelengths, cube.shape[0], str(wl_path), f"wavelengths (one per band of {paths.RAW_CUBE})")
        check_positive_finite(wavelengths, str(wl_path), "wavelengths in nm")
        unit = "nm"
    else:
        log.warning("%s not found: figures will use band numbers instead of wavelengths", wl_path)
        wavelengths, unit = np.arange(1, cube.shape[0] + 1, dtype=np.float32), "band number"
    _check_fwhm(directory / paths.RAW_FWHM, cube.shape[0])
    nodata = _load_nodata(directory / paths.RAW_NODATA, spatial)
    if nodata is not None:
        for path, mask, what in (
            (directory / paths.RAW_TRAIN, train, "training mask"),
            (directory / paths.RAW_TEST, test, "test mask"),
        ):
            check_labels_have_data(mask, nodata, f"{path}: {what}")
    return RawScene(directory, cube, train, test, wavelengths, unit, nodata, read_georef(directory, spatial))


def _load_nodata(path: Path, spatial: tuple[int, ...]) -> np.ndarray | None:
    if not path.exists():
        return None
    nodata = load_npy(path, "no-data mask", ndim=2, kinds="b")
    check_mask_shape(nodata, spatial, f"{path}: no-data mask")
    if nodata.all():
        raise HsixaiError(f"{path}: no-data mask: every pixel is marked as having no data")
    return nodata


def _check_fwhm(path: Path, n_bands: int) -> None:
    if not path.exists():
        return
    fwhm = load_npy(path, "band widths (FWHM)", ndim=1, kinds="fiu")
    check_length(fwhm, n_bands, str(path), f"band widths (one per band of {paths.RAW_CUBE})")
    check_positive_finite(fwhm, str(path), "band widths in nm")


def _load_mask(path: Path, what: str, spatial: tuple[int, ...], n_classes: int) -> np.ndarray:
    mask = load_npy(path, what, ndim=2, kinds="iu")
    check_mask_shape(mask, spatial, f"{path}: {what}")
    check_labels(mask, n_classes, f"{path}: {what}", f"0 = unlabelled, {n_classes} classes in data.class_names")
    return mask.astype(np.int16)


def kept_bands(n_bands: int, removed: list[int]) -> np.ndarray:
    """Indices of the bands that remain after removing `removed` (params: data.remove_bands) from `n_bands`.

    The one rule for prepare and adapt_prepare alike.
    """
    out_of_range = [b for b in removed if b >= n_bands]
    if out_of_range:
        raise HsixaiError(
            f"params: data.remove_bands: band indices {out_of_range[:5]} are out of range "
            f"for a cube with {n_bands} bands (valid: 0..{n_bands - 1})"
        )
    kept = np.setdiff1d(np.arange(n_bands), removed).astype(np.int32)
    if kept.size == 0:
        raise HsixaiError(f"params: data.remove_bands: removes all {n_bands} bands of the cube")
    return kept


def to_zero_based(labels: np.ndarray) -> np.ndarray:
    """Raw labels 1..K -> 0..K-1 and 0 (unlabelled) -> -1, int8."""
    return (labels.astype(np.int16) - 1).astype(np.int8)
