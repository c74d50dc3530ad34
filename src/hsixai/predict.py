"""`hsixai predict` and the `bundle` and `map` stages: a trained point applied to a whole acquisition.

`predict_map` streams a scene in blocks of rows: each block (with the patch
radius of rows above and below, read from the file, never the whole cube) has
the training run's bands kept, is min-max scaled with the TRAINING scene's
per-band range, has its pixels without data filled as training filled them,
and goes through the same PatchSampler (standardisation, zero padding at the
scene border) and models/inference.predict as evaluate; so on the training
scene every pixel's patch, and prediction, is evaluate's. The instances'
softmax probabilities are averaged; the class is the argmax of the mean.

Outputs (written to temporary files in the destination directory, then moved
into place): the class map, a uint8 GeoTIFF (0 = no data or not classified,
class k -> k + 1, a colour table, the crop names in its metadata); beside it
`<name>.probability.tif`, float32 (the chosen class's mean probability, or one
band per class with `softmax`; NaN where not classified): a GeoTIFF holds one
data type for all its bands, so the probabilities cannot share the uint8 file;
and `<name>.png`, the quick-look. The scene's map grid (georef.json of a raw
directory, or the source file's own) is the maps' grid, offset by the window;
without one the maps are on the pixel grid.

Stages: `bundle` writes the workspace point's model bundle (src/hsixai/bundle.py)
into bundle/; `map` maps the workspace scene (data.raw_dir) with it into maps/.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import bundle as bundles
from . import paths as names
from . import plots, tracking
from .checks import check_mask_shape
from .config import Params
from .data.formats import Stored, open_stored, read_mask_and_grid, read_wavelength_file, resolve_band_axis
from .data.georef import Georef, read_georef
from .data.patches import PatchSampler
from .errors import HsixaiError
from .io import load_npy, staged_outputs
from .models.inference import predict
from .paths import MapFiles, Paths
from .runtime import resolve_device

log = logging.getLogger(__name__)

# --model models:/hsixai-cnn2d@champion (or /<version>): a bundle `hsixai select` registered
REGISTRY_SCHEME = "models:/"

BLOCK_BYTES = 64 * 2**20  # raw rows read per block (all bands); what the block costs in memory is a few times this
DEFAULT_TOLERANCE_NM = 3.0
NOT_CLASSIFIED = "no data, outside the mask or not classified"


@dataclass(frozen=True)
class Window:
    """A rectangle of the scene: offsets and size in pixels."""

    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class MapOptions:
    window: Window | None = None
    mask: Path | None = None  # [H, W] on the scene's grid: only its nonzero pixels are classified
    softmax: bool = False  # every class's probability, one band each
    band_axis: int | None = None  # for a file whose format does not fix it
    var: str | None = None  # .mat variable
    wavelengths: Path | None = None  # band centres for a file without them
    tolerance_nm: float = DEFAULT_TOLERANCE_NM
    batch_size: int = 512
    block_rows: int | None = None  # None: as many as BLOCK_BYTES of raw rows allow


@dataclass
class MapScene:
    """An acquisition opened for mapping: the cube is read in blocks of rows, never whole."""

    path: Path
    stored: Stored
    band_axis: int
    wavelengths: np.ndarray | None  # nm
    nodata: np.ndarray | None  # bool [H, W], True = no data
    georef: Georef | None

    @property
    def n_bands(self) -> int:
        return self.stored.shape[self.band_axis]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(s for a, s in enumerate(self.stored.shape) if a != self.band_axis)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of every band [bands, rows, W], in the file's dtype."""
        row_axis = 1 if self.band_axis == 0 else 0
        try:
            block = self.stored.read(row_axis, start, stop)
        except (OSError, ValueError) as exc:  # a damaged file can pass its header and fail here
            raise HsixaiError(f"{self.path}: cannot read rows {start}..{stop} of the cube ({exc})") from None
        return np.moveaxis(block, self.band_axis, 0)


# --------------------------------------------------------------------------- opening a scene
def open_scene(path: Path, options: MapOptions, n_bands_hint: int | None = None) -> MapScene:
    """A raw directory (hsi.npy, optional wavelengths.npy, nodata.npy, georef.json; no masks needed) or any
    cube file `hsixai convert` reads."""
    if path.is_dir():
        stored = open_stored(path / names.RAW_CUBE, "hyperspectral cube")
        if len(stored.shape) != 3:
            raise HsixaiError(f"{stored.path}: expected a 3-D cube [bands, H, W], found shape {stored.shape}")
        spatial = stored.shape[1:]
        wl_path = path / names.RAW_WAVELENGTHS
        wavelengths = load_npy(wl_path, "wavelengths", ndim=1, kinds="fiu") if wl_path.exists() else None
        nodata = None
        if (path / names.RAW_NODATA).exists():
            nodata = load_npy(path / names.RAW_NODATA, "no-data mask", ndim=2, kinds="b")
            check_mask_shape(nodata, spatial, f"{path / names.RAW_NODATA}: no-data mask")
        return MapScene(path, stored, 0, wavelengths, nodata, read_georef(path, spatial))
    stored = open_stored(path, "hyperspectral cube", options.var, ndim=3)
    if len(stored.shape) != 3:
        stored.close()
        raise HsixaiError(f"{path}: expected a 3-D cube, found shape {stored.shape}")
    band_axis = resolve_band_axis(stored, options.band_axis, None, n_bands_hint)
    wavelengths = read_wavelength_file(options.wavelengths) if options.wavelengths else stored.wavelengths
    return MapScene(path, stored, band_axis, wavelengths, None, stored.georef)


def check_bands(scene: MapScene, meta: bundles.BundleMeta, model: Path, tolerance_nm: float) -> None:
    """The scene's bands are the training scene's: the same count, and wavelengths within `tolerance_nm`."""
    if scene.n_bands != meta.raw_bands:
        raise HsixaiError(
            f"{scene.path}: expected {meta.raw_bands} bands (those of the model's training scene, {model}), "
            f"found {scene.n_bands}"
        )
    if scene.wavelengths is None or meta.wavelength_unit != "nm":
        which = "the scene has" if scene.wavelengths is None else "the model's training scene had"
        log.warning("%s: %s no wavelengths: only the band count (%d) was checked", scene.path, which, scene.n_bands)
        return
    if len(scene.wavelengths) != scene.n_bands:
        raise HsixaiError(
            f"{scene.path}: expected one wavelength per band ({scene.n_bands}), found {len(scene.wavelengths)}"
        )
    ours = np.asarray(scene.wavelengths, dtype=np.float64)[meta.bands]
    theirs = np.asarray(meta.wavelengths, dtype=np.float64)
    off = np.flatnonzero(~(np.abs(ours - theirs) <= tolerance_nm))
    if off.size:
        i = int(off[0])
        raise HsixaiError(
            f"{scene.path}: band {meta.bands[i]} is at {ours[i]:.2f} nm, expected {theirs[i]:.2f} nm "
            f"+- {tolerance_nm:g} (the model's training scene, {model}); {off.size} of {meta.n_bands} kept bands differ"
        )


def _window(scene: MapScene, window: Window | None) -> Window:
    height, width = scene.shape
    if window is None:
        return Window(0, 0, height, width)
    if (
        min(window.row, window.col) < 0
        or min(window.height, window.width) < 1
        or window.row + window.height > height
        or window.col + window.width > width
    ):
        raise HsixaiError(
            f"--window: expected ROW COL HEIGHT WIDTH inside {scene.path}'s {height} x {width} pixels, found "
            f"rows {window.row}..{window.row + window.height - 1}, "
            f"columns {window.col}..{window.col + window.width - 1}"
        )
    return window


def _mask(path: Path, scene: MapScene) -> np.ndarray:
    mask, grid = read_mask_and_grid(path, "mask", None)
    check_mask_shape(mask, scene.shape, f"{path}: mask (scene {scene.path})")
    if grid is not None and scene.georef is not None and not scene.georef.same_grid(grid):
        raise HsixaiError(
            f"{path}: mask: expected the scene's grid ({scene.georef.describe()}), found {grid.describe()}"
        )
    return mask != 0


# --------------------------------------------------------------------------- the map
def predict_map(
    scene_path: Path,
    bundle: bundles.Bundle,
    out: tuple[Path, Path, Path],
    options: MapOptions = MapOptions(),
    device: torch.device | str = "cpu",
    progress: bool = True,
    title: str | None = None,
    scene_label: str | None = None,
) -> dict:
    """Map `scene_path` with `bundle` into `out`: (class map, probabilities, quick-look), written as given (the
    caller stages them; MapFiles.files names them beside each other).

    Returns what the maps' metadata says (plus counts).
    """
    meta = bundle.meta
    scene = open_scene(scene_path, options, meta.raw_bands)
    try:
        check_bands(scene, meta, bundle.directory, options.tolerance_nm)
        win = _window(scene, options.window)
        height, width = scene.shape
        if meta.patch_size > min(height, width):
            raise HsixaiError(
                f"{scene.path}: expected a scene at least {meta.patch_size} px on each side (the model's patch), "
                f"found {height} x {width}"
            )
        if len(meta.class_names) > 254:
            raise HsixaiError(
                f"{bundle.directory}: a uint8 map holds at most 254 classes, found {len(meta.class_names)}"
            )
        selected = None if options.mask is None else _mask(options.mask, scene)
        grid = _window_grid(scene.georef, win)
        info = {
            "scene": scene_label or str(scene.path),
            "window": [win.row, win.col, win.height, win.width],
            "crs": None if grid is None else grid.crs,
            **bundles.describe(meta),
        }
        counts = _write_maps(scene, bundle, win, selected, grid, out, options, device, progress, info)
    finally:
        scene.stored.close()
    codes, metres = _read_back(out[0])
    plots.crop_map(
        codes,
        meta.class_names,
        metres,
        out[2],
        title or f"{meta.model} p={meta.patch_size}, {meta.n_instances} instances: {scene_label or scene.path.name}",
    )
    return {**info, **counts}


QUICKLOOK_PIXELS = 1500  # the quick-look's longer side at most: the class map read back decimated


def _read_back(path: Path) -> tuple[np.ndarray, float | None]:
    """The written class map, decimated to at most QUICKLOOK_PIXELS a side (nearest), and the size in metres
    of one of its pixels (None on the pixel grid or a geographic CRS: then no km scale)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            step = max(1, -(-max(src.height, src.width) // QUICKLOOK_PIXELS))
            shape = (-(-src.height // step), -(-src.width // step))
            codes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            metres = None
            if src.crs is not None and src.crs.is_projected:
                factor = src.crs.linear_units_factor[1]  # metres per CRS unit
                t = src.transform
                metres = float(np.hypot(t.a, t.d)) * factor * src.width / shape[1]
    return codes, metres


def _window_grid(georef: Georef | None, win: Window) -> Georef | None:
    """The map grid of the window: the scene's, its origin moved to the window's upper-left corner."""
    if georef is None:
        return None
    a, b, c, d, e, f = georef.transform
    origin = (a * win.col + b * win.row + c, d * win.col + e * win.row + f)
    return Georef(georef.crs, (a, b, origin[0], d, e, origin[1]), win.width, win.height, georef.source)


def _block_rows(scene: MapScene, options: MapOptions) -> int:
    if options.block_rows is not None:
        return max(1, options.block_rows)
    height, width = scene.shape
    return max(1, BLOCK_BYTES // max(1, scene.n_bands * width * scene.stored.dtype.itemsize))


def _span(start: int, stop: int, radius: int, size: int, patch: int) -> tuple[int, int]:
    """What to read for outputs start:stop: `radius` more on each side inside 0:size, at least `patch` long
    (PatchSampler's minimum). Zero padding is only ever reached at the scene's own edges."""
    lo, hi = max(0, start - radius), min(size, stop + radius)
    if hi - lo < patch:
        lo = max(0, hi - patch)
        hi = min(size, lo + patch)
    return lo, hi


def _write_maps(scene, bundle, win, selected, grid, out, options, device, progress, info) -> dict:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window as RWindow

    meta = bundle.meta
    k = len(meta.class_names)
    radius = meta.patch_size // 2
    height, width = scene.shape
    col_lo, col_hi = _span(win.col, win.col + win.width, radius, width, meta.patch_size)
    common = {
        "driver": "GTiff",
        "height": win.height,
        "width": win.width,
        "crs": None if grid is None else grid.crs,
        "transform": rasterio.Affine(*grid.transform) if grid is not None else rasterio.Affine.identity(),
        "compress": "deflate",
    }
    n_prob = k if options.softmax else 1
    rows_per_block = _block_rows(scene, options)
    classified = nodata_pixels = 0
    per_class = np.zeros(k, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with (
            rasterio.open(out[0], "w", count=1, dtype="uint8", nodata=0, **common) as classes,
            rasterio.open(out[1], "w", count=n_prob, dtype="float32", nodata=float("nan"), **common) as prob,
        ):
            _describe(classes, prob, meta.class_names, options.softmax, info)
            bar = tqdm(total=win.height, desc="predict", unit="row", disable=not progress)
            for start in range(win.row, win.row + win.height, rows_per_block):
                stop = min(start + rows_per_block, win.row + win.height)
                row_lo, row_hi = _span(start, stop, radius, height, meta.patch_size)
                sampler, missing = _block_sampler(scene, meta, (row_lo, row_hi), (col_lo, col_hi), device)
                rows, cols = np.mgrid[start:stop, win.col : win.col + win.width]
                take = ~missing[start - row_lo : stop - row_lo, win.col - col_lo : win.col - col_lo + win.width]
                nodata_pixels += int((~take).sum())
                if selected is not None:
                    take &= selected[start:stop, win.col : win.col + win.width]
                codes = np.zeros(take.shape, dtype=np.uint8)
                probs = np.full((n_prob, *take.shape), np.nan, dtype=np.float32)
                if take.any():
                    centres = sampler.centres(rows[take] - row_lo, cols[take] - col_lo)
                    mean_p = _mean_probabilities(bundle.models, sampler, centres, options.batch_size)  # [n, K]
                    chosen = mean_p.argmax(axis=1)
                    codes[take] = chosen + 1
                    probs[:, take] = mean_p.T if options.softmax else mean_p[np.arange(len(chosen)), chosen][None]
                    classified += int(take.sum())
                    per_class += np.bincount(chosen, minlength=k)
                window = RWindow(0, start - win.row, win.width, stop - start)
                classes.write(codes, 1, window=window)
                prob.write(probs, window=window)
                del sampler
                bar.update(stop - start)
            bar.close()
    return {
        "classified_pixels": classified,
        "nodata_pixels": nodata_pixels,
        "pixels_per_class": dict(zip(meta.class_names, per_class.tolist())),
    }


def _block_sampler(
    scene: MapScene, meta: bundles.BundleMeta, rows: tuple[int, int], cols: tuple[int, int], device
) -> tuple[PatchSampler, np.ndarray]:
    """The scene's rows[0]:rows[1], cols[0]:cols[1] as training made its input: a PatchSampler over the kept
    bands [bands, rows, cols], scaled with the training scene's range, pixels without data filled; and those
    pixels, bool [rows, cols] (NaN or Inf in a kept band, or the scene's no-data mask)."""
    raw = scene.read_rows(*rows)[:, :, cols[0] : cols[1]][np.asarray(meta.bands)].astype(np.float32)
    missing = ~np.isfinite(raw).all(axis=0)
    if scene.nodata is not None:
        missing |= scene.nodata[rows[0] : rows[1], cols[0] : cols[1]]
    scaled = meta.scale(raw)
    del raw  # one block in memory at a time, not two
    if missing.any():
        scaled[:, missing] = np.asarray(meta.fill, dtype=np.float32)[:, None]
    return PatchSampler(scaled, np.asarray(meta.mean), np.asarray(meta.std), meta.patch_size, device), missing


def _mean_probabilities(models, sampler: PatchSampler, centres: torch.Tensor, batch_size: int) -> np.ndarray:
    """The instances' softmax probabilities averaged [n, K], each instance through evaluate's predict()."""
    total = None
    for model in models:
        p = torch.softmax(torch.from_numpy(predict(model, sampler, centres, batch_size)), dim=1).numpy()
        total = p if total is None else total + p
    return total / len(models)


def _describe(classes, prob, class_names: list[str], softmax: bool, info: dict) -> None:
    """Colour table, crop names and provenance in the GeoTIFFs' own metadata (GDAL tags, band descriptions)."""
    colours = plots.class_colours_rgb(len(class_names))
    classes.write_colormap(1, {0: (0, 0, 0, 0), **{i + 1: (*rgb, 255) for i, rgb in enumerate(colours)}})
    legend = {"CLASS_0": NOT_CLASSIFIED, **{f"CLASS_{i + 1}": n for i, n in enumerate(class_names)}}
    classes.set_band_description(
        1, "crop class: 0 = " + NOT_CLASSIFIED + "; " + ", ".join(f"{i + 1} = {n}" for i, n in enumerate(class_names))
    )
    classes.update_tags(1, **legend)
    tags = {key.upper(): str(value) for key, value in info.items()}
    classes.update_tags(**tags, CLASS_NAMES=json.dumps(class_names))
    prob.update_tags(**tags, CLASS_NAMES=json.dumps(class_names))
    if softmax:
        for i, n in enumerate(class_names):
            prob.set_band_description(i + 1, f"probability of {n} (mean of the instances' softmax)")
    else:
        prob.set_band_description(1, "probability of the mapped class (mean of the instances' softmax)")


# --------------------------------------------------------------------------- which model
def recommended_experiment(paths: Paths, group: str | None) -> tuple[str, str, dict]:
    """(experiment name, its git commit, its row) of the recommended point in reports/selection.json."""
    path = paths.selection_report().json
    if not path.is_file():
        raise HsixaiError(f"{path}: no selection found (run `hsixai sweep` or `hsixai select`, or pass --model)")
    report = json.loads(path.read_text())
    groups = report.get("groups") or {}
    if group is None and len(groups) != 1:
        raise HsixaiError(
            f"{path}: expected one recommended point, found {len(groups)} groups ({', '.join(groups)}); "
            f"pass --group with one of them, or --model"
        )
    label = group if group is not None else next(iter(groups))
    if label not in groups:
        raise HsixaiError(f"--group: expected one of {', '.join(groups)} ({path}), found {label!r}")
    x_key, recommended = report["x"], groups[label]["recommended"]
    x = recommended.get(x_key)
    row = next((r for r in groups[label]["rows"] if r.get(x_key) == x and r.get("experiment")), None)
    if x is None or row is None:
        raise HsixaiError(f"{path}: group {label!r} recommends no point ({recommended.get('missing')} missing)")
    name = row["experiment"]
    return name, bundles.experiment_commit(paths, name), row


# --------------------------------------------------------------------------- entry points
@dataclass(frozen=True)
class PredictRequest:
    scene: Path
    out: Path
    model: Path | None = None  # a bundle directory; None: the selection's recommended point
    group: str | None = None
    device: str = "auto"
    options: MapOptions = MapOptions()
    # `scene` is a path in the repository, read from the recommended experiment's commit and the DVC cache
    # (a fresh clone's workspace after `hsixai sweep` never ran the data stages itself)
    scene_from_experiment: bool = False


def run_predict(request: PredictRequest, paths: Paths, progress: bool = True) -> dict:
    """`hsixai predict`: the map of `request.scene` with the given bundle or the recommended point."""
    if request.out.suffix.lower() not in (".tif", ".tiff"):
        raise HsixaiError(f"--out: expected a GeoTIFF path ending in .tif, found {request.out}")
    if request.out.is_dir():
        raise HsixaiError(f"--out: expected a file path, found the directory {request.out}")
    if request.options.batch_size < 1:
        raise HsixaiError(f"--batch-size: expected a positive integer, found {request.options.batch_size}")
    device = resolve_device(request.device, "--device")
    if request.scene_from_experiment and request.model is not None:
        raise HsixaiError(
            "--scene-from-experiment: expected the default model (the recommended experiment), found --model"
        )
    scene, label = request.scene, None
    with tempfile.TemporaryDirectory(prefix="hsixai-bundle-") as tmp:
        if request.model is None:
            name, rev, _ = recommended_experiment(paths, request.group)
            log.info("the selection's recommended point: experiment %s (%s)", name, rev[:7])
            bundles.bundle_of_experiment(paths, name, rev, Path(tmp) / "bundle")
            model_dir = Path(tmp) / "bundle"
            if request.scene_from_experiment:
                scene = _experiment_scene(paths, name, rev, request.scene, Path(tmp) / "scene")
                label = f"{request.scene} of DVC experiment {name}"
        elif str(request.model).startswith(REGISTRY_SCHEME):  # a version in MLflow's Model Registry
            model_dir = tracking.download_model(paths, str(request.model), Path(tmp) / "registered")
        else:
            model_dir = request.model
        bundle = bundles.load_bundle(model_dir, device)
        with staged_outputs(files=MapFiles(request.out).files) as staged:
            summary = predict_map(scene, bundle, tuple(staged), request.options, device, progress, scene_label=label)
    return summary


def _experiment_scene(paths: Paths, name: str, rev: str, scene: Path, out: Path) -> Path:
    """`scene` (a path in the repository) as experiment `name`'s commit has it, copied to `out`."""
    from dvc.api import DVCFileSystem

    relative = str(paths.resolve(scene).relative_to(paths.root))
    fs = DVCFileSystem(str(paths.root), rev=rev)
    if not fs.exists(relative):
        raise HsixaiError(f"{scene}: not found in DVC experiment {name!r} ({rev[:7]}); expected the scene it mapped")
    fs.get(relative, str(out), recursive=fs.isdir(relative))
    return out


def run_bundle(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Stage `bundle`: the workspace point's model bundle -> bundle/."""
    with staged_outputs(paths.bundle_dir) as (out,):
        meta = bundles.write_bundle(
            out,
            paths,
            bundles.workspace_opener(paths),
            list(range(params.train.instances)),
            {"point": "workspace", "model": params.model, "patch_size": params.patch_size, "seed": params.seed},
        )
    if (meta.model, meta.patch_size) != (params.model, params.patch_size):
        raise HsixaiError(
            f"{paths.models_dir}: checkpoints are {meta.model} p={meta.patch_size}, params ask for "
            f"{params.model} p={params.patch_size} (re-run train)"
        )
    return {"model": meta.model, "patch_size": meta.patch_size, "instances": meta.n_instances}


def run_map(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Stage `map`: the workspace scene (data.raw_dir) mapped by the workspace point's bundle -> maps/."""
    device = resolve_device(params.train.device, "train.device")
    bundle = bundles.load_bundle(paths.bundle_dir, device)
    options = MapOptions(batch_size=params.train.eval_batch_size)
    with staged_outputs(paths.maps_dir) as (out,):
        scene = paths.resolve(params.data.raw_dir)
        return predict_map(scene, bundle, paths.scene_map(out).files, options, device, progress)
