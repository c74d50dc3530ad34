"""`prepare` stage: raw acquisition -> band-selected, min-max scaled cube and 0-based label maps.

Streams the cube band by band (read, check, scale, write), so a full PRISMA
cube (1.24 GB) passes with a few bands in memory at a time.

Outputs in data/prepared/:
    cube.npy          float32 [bands, H, W] in [0, 1]
    train_labels.npy  int8 [H, W], -1 = unlabelled, 0..K-1 = classes
    test_labels.npy   int8 [H, W], same coding
    wavelengths.npy   float32 [bands] of the kept bands
    bands.npy         int32 [bands], the kept bands' indices in the raw cube
    band_range.npy    float32 [2, bands], raw min and max per kept band (to scale another acquisition alike)
    meta.json         class names, wavelength unit, shapes
    nodata.npy        bool [H, W], only when the raw directory has one: the pixels without data, which
                      hold each band's mean over the pixels with data (scaled), never NaN
    georef.json       only when the raw directory has one: its map grid, copied byte for byte

Pixels without data (raw nodata.npy) take no part in the finite-values check or
the min-max range, so fill values neither fail the stage nor stretch the scale.
Figures in figures/prepare/: false_colour.png, class_spectra.png
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
from tqdm import tqdm

from .. import plots
from ..checks import check_finite
from ..config import Params
from ..errors import HsixaiError
from ..io import BandReader, NpyStreamWriter, staged_outputs, write_json
from ..paths import RAW_GEOREF, RAW_TRAIN, Paths
from .readers import kept_bands, open_raw_scene, to_zero_based

log = logging.getLogger(__name__)

# Bands of a colour-infrared composite: vegetation shows red, soil and towns cyan-grey.
FALSE_COLOUR_NM = (860.0, 650.0, 550.0)


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns meta.json's content."""
    names = params.data.class_names
    scene = open_raw_scene(paths.resolve(params.data.raw_dir), len(names))
    kept = kept_bands(scene.n_bands, params.data.removed_band_indices())
    train = to_zero_based(scene.train)
    test = to_zero_based(scene.test)
    train_counts = np.bincount(train[train >= 0], minlength=len(names))
    for k in np.flatnonzero(train_counts == 0):
        raise HsixaiError(f"{scene.directory / RAW_TRAIN}: class {k + 1} ({names[k]}) has no training pixels")

    wavelengths = scene.wavelengths[kept]
    colour_bands = [int(np.argmin(np.abs(wavelengths - nm))) for nm in FALSE_COLOUR_NM]
    labelled = train.ravel() >= 0
    train_flat = train.ravel()[labelled]
    sums = np.zeros((len(names), len(kept)))
    sums_sq = np.zeros((len(names), len(kept)))
    band_range = np.zeros((2, len(kept)), dtype=np.float32)
    rgb = {}
    constant = []
    height, width = scene.spatial_shape
    valid = None if scene.nodata is None else ~scene.nodata  # [H, W] bool, True = the pixel has data

    with staged_outputs(paths.prepared_dir, paths.figures_dir("prepare")) as (out, figs):
        files, figures = paths.prepared_files(out), paths.figures("prepare", figs)
        with (
            BandReader(scene.cube) as reader,
            NpyStreamWriter(files.cube, (len(kept), height, width), np.float32) as writer,
        ):
            for i, b in enumerate(tqdm(kept, desc="prepare: bands", unit="band", disable=not progress)):
                band = reader.read(int(b)).astype(np.float32)
                # Pixels without data may hold anything (NaN included): they are filled below.
                check_finite(band, f"{scene.cube.path}: band {int(b)}", ignore=scene.nodata)
                # Class means of the raw values: min-max scaling per band would distort the spectra's shape.
                values = band.ravel()[labelled].astype(np.float64)
                sums[:, i] = np.bincount(train_flat, weights=values, minlength=len(names))
                sums_sq[:, i] = np.bincount(train_flat, weights=values**2, minlength=len(names))
                with_data = band if valid is None else band[valid]
                lo, hi = float(with_data.min()), float(with_data.max())
                band_range[:, i] = lo, hi
                if hi > lo:
                    band -= lo
                    band /= hi - lo
                    np.clip(band, 0.0, 1.0, out=band)
                    if valid is not None:
                        # A neutral value, not NaN: patches of pixels near the acquisition's edge reach here.
                        band[~valid] = band[valid].mean(dtype=np.float64)
                else:  # a dead band carries no information; keep it as zeros so band indices stay aligned
                    constant.append(int(b))
                    band[:] = 0.0
                writer.write(band)
                if i in colour_bands:
                    rgb[i] = band.copy()
        if constant:
            log.warning(
                "%s: %d kept bands are constant and were written as zeros: raw band indices %s",
                scene.cube.path,
                len(constant),
                constant[:10],
            )

        np.save(files.training_mask, train)
        np.save(files.test_labels, test)
        np.save(files.wavelengths, wavelengths)
        np.save(files.bands, kept)
        np.save(files.band_range, band_range)
        if scene.nodata is not None:
            np.save(files.nodata, scene.nodata)
        if scene.georef is not None:  # checked against the cube by open_raw_scene; copied as it is
            shutil.copyfile(scene.directory / RAW_GEOREF, files.georef)
        meta = {
            "class_names": names,
            "shape": [len(kept), height, width],
            "raw_dir": params.data.raw_dir,
            "raw_bands": scene.n_bands,
            "removed_bands": int(scene.n_bands - len(kept)),
            "constant_bands": constant,
            "wavelength_unit": scene.wavelength_unit,
            "nodata_pixels": 0 if scene.nodata is None else int(scene.nodata.sum()),
            "georeferenced": scene.georef is not None,
            "train_pixels": dict(zip(names, map(int, train_counts))),
            "test_pixels": dict(zip(names, map(int, np.bincount(test[test >= 0], minlength=len(names))))),
        }
        write_json(files.meta, meta)

        mean = sums / train_counts[:, None]
        std = np.sqrt(np.maximum(sums_sq / train_counts[:, None] - mean**2, 0.0))
        plots.class_spectra(
            wavelengths,
            mean,
            std,
            train_counts,
            names,
            scene.wavelength_unit,
            figures.class_spectra,
            "Mean raw training spectrum per class (+-1 std), kept bands",
        )
        unit = " nm" if scene.wavelength_unit == "nm" else ""
        plots.false_colour(
            np.stack([rgb[i] for i in colour_bands]),
            [f"{wavelengths[i]:.0f}{unit}" for i in colour_bands],
            figures.false_colour,
            f"False-colour composite ({height} x {width} px)",
        )
    return meta
