"""Real hyperspectral files -> the raw format (`hsixai convert`).

Readers for GeoTIFF (rasterio), ENVI (.hdr + binary, header parsed here),
MATLAB .mat (v5 with scipy, v7.3 with h5py), NumPy .npy and PRISMA Level-2
products (.he5, h5py). Each reader gives a `Stored` array: its shape and dtype
in the file's own axis order (MATLAB's order for .mat), the band axis where the
format fixes it, the wavelengths its metadata carries (nm), its map grid when it
has one, and block reads along one axis, so a cube is copied a block of rows at
a time and never held in memory twice.

`convert` writes hsi.npy [bands, H, W], train_crops.npy, test_crops.npy,
wavelengths.npy (when known), fwhm.npy and nodata.npy (PRISMA), georef.json
(when the source is georeferenced) and convert.json (where it all came from)
into a raw directory atomically, then checks the result with `open_raw_scene`.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format
from tqdm import tqdm

from .. import paths
from ..checks import (
    check_array,
    check_cube,
    check_finite,
    check_finite_per_band,
    check_labels,
    check_labels_have_data,
    check_length,
    check_mask_shape,
    check_positive_finite,
    non_finite,
)
from ..errors import HsixaiError
from ..io import inspect_npy, staged_outputs, write_json
from .georef import Georef, crs_string, from_rasterio, write_georef
from .readers import open_raw_scene

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 * 2**20  # one block of rows of the cube in memory at a time
GDAL_CACHE_MB = 64
RAW_FILES = {
    paths.RAW_CUBE,
    paths.RAW_TRAIN,
    paths.RAW_TEST,
    paths.RAW_WAVELENGTHS,
    paths.RAW_FWHM,
    paths.RAW_NODATA,
    paths.RAW_GEOREF,
    paths.RAW_CONVERT_SUMMARY,
}


# --------------------------------------------------------------------------- the common view
@dataclass
class Stored:
    """An N-D array in a file, read lazily.

    `read(axis, start, stop)` returns the block `start:stop` along `axis` with
    every other axis whole, in the order of `shape`.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[int, int, int], np.ndarray]
    band_axis: int | None = None  # fixed by the format (GeoTIFF, ENVI interleave)
    band_axis_why: str = ""
    wavelengths: np.ndarray | None = None  # nm, from the file's metadata
    name: str = ""  # the variable, for .mat
    close: Callable[[], None] = field(default=lambda: None)
    georef: Georef | None = None  # the map grid of the two spatial axes, when the file has one
    fwhm: np.ndarray | None = None  # nm, band widths (PRISMA)
    nan_is_nodata: bool = False  # a pixel that is NaN in every band has no data (the reader put it there)
    notes: tuple[str, ...] = ()  # warnings to log once the conversion succeeded

    def read_all(self) -> np.ndarray:
        return self.read(0, 0, self.shape[0])


def _slicer(array: Any) -> Callable[[int, int, int], np.ndarray]:
    def read(axis: int, start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * len(array.shape)
        index[axis] = slice(start, stop)
        return np.asarray(array[tuple(index)])

    return read


def _file_reader(
    path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype
) -> Callable[[int, int, int], np.ndarray]:
    """Blocks of a C-ordered array in a binary file, by plain reads.

    Not a memory map: mapped pages count towards the process's resident memory,
    and the point of reading blocks is to hold one block, not the cube.
    """

    def read(axis: int, start: int, stop: int) -> np.ndarray:
        stop = min(stop, shape[axis])
        outer, inner = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1 :]))
        block = np.empty((outer, stop - start, inner), dtype=dtype)
        with open(path, "rb") as fh:
            for i in range(outer):  # one contiguous run of `stop - start` slabs per index of the outer axes
                fh.seek(offset + (i * shape[axis] + start) * inner * dtype.itemsize)
                data = np.fromfile(fh, dtype=dtype, count=(stop - start) * inner)
                if data.size != block[i].size:
                    raise OSError(f"file ended at byte {fh.tell()}")
                block[i] = data.reshape(stop - start, inner)
        return block.reshape(*shape[:axis], stop - start, *shape[axis + 1 :])

    return read


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_stored(path: Path, what: str, var: str | None = None, ndim: int = 3) -> Stored:
    """Open `path` by its format; `ndim` (3 for a cube, 2 for a mask) picks a .mat variable when `var` is None."""
    if not path.exists():
        raise HsixaiError(f"{path}: {what} not found")
    suffix = path.suffix.lower()
    if var is not None and suffix != ".mat":
        raise HsixaiError(f"{path}: a variable name ({var!r}) only applies to .mat files")
    if suffix == ".npy":
        return _open_npy(path, what)
    if suffix in (".tif", ".tiff"):
        return _open_geotiff(path, what)
    if suffix == ".mat":
        return _open_mat(path, what, var, ndim)
    if suffix == ".he5":
        return _open_prisma(path, what)
    if suffix == ".hdr" or _envi_header_for(path) is not None:
        return _open_envi(path, what)
    raise HsixaiError(
        f"{path}: {what}: unknown file format (expected .npy, .tif/.tiff, .mat, a PRISMA .he5, "
        f"or an ENVI .hdr with its data file)"
    )


# --------------------------------------------------------------------------- NumPy
def _open_npy(path: Path, what: str) -> Stored:
    info = inspect_npy(path, what)  # checks the header and that the data is all there
    if info.fortran_order:  # rare; a memory map reads it in any axis order
        return Stored(path, info.shape, info.dtype, _slicer(np.load(path, mmap_mode="r", allow_pickle=False)))
    return Stored(path, info.shape, info.dtype, _file_reader(path, info.offset, info.shape, info.dtype))


# --------------------------------------------------------------------------- GeoTIFF
_DESCRIPTION_WL = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(nm|nanomet\w*|um|µm|μm|micromet\w*|microns?)\b", re.IGNORECASE)


def _open_geotiff(path: Path, what: str) -> Stored:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioError as exc:
        raise HsixaiError(f"{path}: {what} is not a readable GeoTIFF ({_one_line(exc)})") from None
    if len(set(src.dtypes)) != 1:
        src.close()
        raise HsixaiError(f"{path}: {what}: expected one data type for all bands, found {sorted(set(src.dtypes))}")

    def read(axis: int, start: int, stop: int) -> np.ndarray:
        from rasterio.windows import Window

        bands = list(range(1, src.count + 1))
        window = Window(0, 0, src.width, src.height)
        if axis == 0:
            bands = bands[start:stop]
        elif axis == 1:
            window = Window(0, start, src.width, min(stop, src.height) - start)
        else:
            window = Window(start, 0, min(stop, src.width) - start, src.height)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # GDAL's block cache would otherwise grow to 5% of RAM
            return src.read(bands, window=window)

    try:
        wavelengths = _geotiff_wavelengths(src, path)
        georef = from_rasterio(src, path)
    except HsixaiError:
        src.close()
        raise
    notes = ()
    if georef is None and src.crs is None and src.transform != rasterio.Affine.identity():
        notes = (
            f"{path}: a geotransform without a coordinate reference system: no {paths.RAW_GEOREF} written, "
            f"the scene stays on its pixel grid",
        )
    return Stored(
        path,
        (src.count, src.height, src.width),
        np.dtype(src.dtypes[0]),
        read,
        band_axis=0,
        band_axis_why="GeoTIFF bands",
        wavelengths=wavelengths,
        close=src.close,
        georef=georef,
        notes=notes,
    )


def _geotiff_wavelengths(src: Any, path: Path) -> np.ndarray | None:
    """Per band: a `wavelength` tag (with `wavelength_units`), else a number with its unit in the description."""
    values, units = [], []
    for band in range(1, src.count + 1):
        tags = {k.lower(): v for k, v in src.tags(band).items()}
        description = src.descriptions[band - 1] or ""
        match = _DESCRIPTION_WL.search(description)
        if "wavelength" in tags:
            values.append(tags["wavelength"])
            units.append(
                tags.get("wavelength_units") or tags.get("wavelength_unit") or src.tags().get("wavelength_units")
            )
        elif match:
            values.append(match.group(1))
            units.append(match.group(2))
    if not values:
        return None
    if len(values) != src.count:
        raise HsixaiError(
            f"{path}: band metadata gives wavelengths for {len(values)} of {src.count} bands (pass --wavelengths)"
        )
    try:
        nm = [to_nm(np.array([float(v)]), u, path)[0] for v, u in zip(values, units)]
    except ValueError:
        raise HsixaiError(f"{path}: band metadata has a wavelength that is not a number (pass --wavelengths)") from None
    return np.array(nm)


# --------------------------------------------------------------------------- wavelength units
_NM_PER_UNIT = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "nanometre": 1.0,
    "nanometres": 1.0,
    "um": 1000.0,
    "µm": 1000.0,
    "μm": 1000.0,
    "micrometer": 1000.0,
    "micrometers": 1000.0,
    "micrometre": 1000.0,
    "micrometres": 1000.0,
    "micron": 1000.0,
    "microns": 1000.0,
}
MICROMETRE_MAX = 30.0  # no optical sensor's band centre is below 30 nm, none above 30 µm


def to_nm(values: np.ndarray, unit: str | None, source: Path | str) -> np.ndarray:
    """Wavelengths in nm: by their stated unit, else micrometres only when every value is below 30."""
    values = np.asarray(values, dtype=np.float64)
    key = (unit or "").strip().lower()
    if key in ("", "unknown", "index", "none"):
        finite = values[np.isfinite(values) & (values > 0)]
        if finite.size and finite.max() < MICROMETRE_MAX:
            log.info("%s: wavelengths below %g without a unit: read as micrometres", source, MICROMETRE_MAX)
            return values * 1000.0
        return values
    if key not in _NM_PER_UNIT:
        raise HsixaiError(f"{source}: wavelength units {unit!r} not understood (expected nm or micrometers)")
    return values * _NM_PER_UNIT[key]


def read_wavelength_file(path: Path) -> np.ndarray:
    """--wavelengths: a 1-D .npy, or a text file of numbers (nm, or micrometres when all are below 30)."""
    if not path.is_file():
        raise HsixaiError(f"{path}: wavelengths file not found")
    if path.suffix.lower() == ".npy":
        stored = _open_npy(path, "wavelengths")
        check_array(stored, f"{path}: wavelengths", ndim=1)
        values = stored.read_all()
    else:
        try:
            text = path.read_text()
            values = np.array([float(v) for v in re.split(r"[\s,;]+", text.strip()) if v], dtype=np.float64)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HsixaiError(
                f"{path}: wavelengths: expected numbers separated by spaces, commas or new lines ({_one_line(exc)})"
            ) from None
    check_array(values, f"{path}: wavelengths", ndim=1, kinds="fiu")
    return to_nm(values, None, path)


# --------------------------------------------------------------------------- ENVI
ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
ENVI_AXES = {
    "bsq": ("bands", "lines", "samples"),
    "bil": ("lines", "bands", "samples"),
    "bip": ("lines", "samples", "bands"),
}


def _envi_header_for(data: Path) -> Path | None:
    for header in (data.with_suffix(".hdr"), data.parent / f"{data.name}.hdr"):
        if header != data and header.is_file():
            return header
    return None


def _envi_data_for(header: Path) -> Path:
    base = header.with_suffix("")
    wanted = {f"{base.name}{s}".lower() for s in ENVI_DATA_SUFFIXES}
    found = sorted(p for p in header.parent.iterdir() if p.is_file() and p.name.lower() in wanted and p != header)
    if not found:
        looked = ", ".join(f"{base.name}{s}" for s in ENVI_DATA_SUFFIXES)
        raise HsixaiError(f"{header}: ENVI data file not found next to the header (looked for {looked})")
    if len(found) > 1:
        raise HsixaiError(
            f"{header}: several ENVI data files fit this header ({', '.join(p.name for p in found)}); "
            f"pass the data file itself"
        )
    return found[0]


def parse_envi_header(path: Path) -> dict[str, str]:
    """`key = value` pairs (keys lower-cased); `{...}` values may span lines and keep their braces' content."""
    text = path.read_text(encoding="latin-1")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "ENVI":
        raise HsixaiError(f"{path}: not an ENVI header (its first line must be 'ENVI')")
    header: dict[str, str] = {}
    pending = ""
    for line in lines[1:]:
        pending = f"{pending}\n{line}" if pending else line
        if "{" in pending and "}" not in pending:
            continue  # a braced value goes on
        if "=" in pending:
            key, value = pending.split("=", 1)
            value = value.strip()
            if value.startswith("{") and value.endswith("}"):
                value = value[1:-1].strip()
            header[" ".join(key.lower().split())] = value
        pending = ""
    if pending:
        raise HsixaiError(f"{path}: ENVI header ends inside a '{{...}}' value")
    return header


def _envi_int(header: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    if key not in header:
        if default is not None:
            return default
        raise HsixaiError(f"{path}: ENVI header has no '{key}' (required)")
    try:
        return int(header[key])
    except ValueError:
        raise HsixaiError(f"{path}: ENVI header: '{key}' should be an integer, found {header[key]!r}") from None


def _open_envi(path: Path, what: str) -> Stored:
    if path.suffix.lower() == ".hdr":
        header_path, data_path = path, _envi_data_for(path)
    else:
        header_path, data_path = _envi_header_for(path), path
    header = parse_envi_header(header_path)
    size = {k: _envi_int(header, k, header_path) for k in ("samples", "lines", "bands")}
    if min(size.values()) < 1:
        raise HsixaiError(f"{header_path}: ENVI header: expected positive samples, lines and bands, found {size}")
    code = _envi_int(header, "data type", header_path)
    if code not in ENVI_DTYPES:
        raise HsixaiError(f"{header_path}: ENVI data type {code} not supported (supported: {sorted(ENVI_DTYPES)})")
    dtype = np.dtype(ENVI_DTYPES[code])
    if dtype.itemsize > 1:
        order = _envi_int(header, "byte order", header_path)
        if order not in (0, 1):
            raise HsixaiError(f"{header_path}: ENVI 'byte order' must be 0 or 1, found {order}")
        dtype = dtype.newbyteorder("<" if order == 0 else ">")
    interleave = header.get("interleave", "").strip().lower()
    if interleave not in ENVI_AXES:
        found = repr(header["interleave"]) if "interleave" in header else "no 'interleave'"
        raise HsixaiError(f"{header_path}: ENVI header: expected interleave bsq, bil or bip, found {found}")
    offset = _envi_int(header, "header offset", header_path, default=0)
    axes = ENVI_AXES[interleave]
    shape = tuple(size[a] for a in axes)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    actual = data_path.stat().st_size
    if actual != expected:
        state = "is truncated" if actual < expected else "is longer than its header says"
        raise HsixaiError(
            f"{data_path}: ENVI data file {state}: header says {size['bands']} bands x "
            f"{size['lines']} lines x {size['samples']} samples of {dtype} after {offset} bytes "
            f"({expected} bytes), file has {actual}"
        )
    georef, notes = _envi_georef(header, header_path, data_path, size)
    return Stored(
        data_path,
        shape,
        dtype,
        _file_reader(data_path, offset, shape, dtype),
        band_axis=axes.index("bands"),
        band_axis_why=f"ENVI interleave {interleave}",
        wavelengths=_envi_wavelengths(header, header_path),
        georef=georef,
        notes=notes,
    )


def _envi_georef(
    header: dict[str, str], header_path: Path, data_path: Path, size: dict[str, int]
) -> tuple[Georef | None, tuple[str, ...]]:
    """The grid of `map info` (+ `coordinate system string`), as GDAL's ENVI driver reads them.

    GDAL knows ENVI's projection names, datums and reference-pixel convention;
    a header without `map info` is on its pixel grid and GDAL is not asked.
    """
    if "map info" not in header:
        return None, ()
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(data_path) as src:
                georef = from_rasterio(src, header_path)
                shape = (src.height, src.width)
    except (RasterioError, HsixaiError) as exc:
        return None, (
            f"{header_path}: 'map info' could not be read ({_one_line(exc)}): no {paths.RAW_GEOREF} "
            f"written, the scene stays on its pixel grid",
        )
    if georef is None or shape != (size["lines"], size["samples"]):
        return None, (
            f"{header_path}: 'map info' gives no coordinate system GDAL understands: no "
            f"{paths.RAW_GEOREF} written, the scene stays on its pixel grid",
        )
    return georef, ()


def _envi_wavelengths(header: dict[str, str], path: Path) -> np.ndarray | None:
    if "wavelength" not in header:
        return None
    try:
        values = np.array([float(v) for v in header["wavelength"].replace("\n", " ").split(",") if v.strip()])
    except ValueError:
        raise HsixaiError(f"{path}: ENVI 'wavelength' holds a value that is not a number") from None
    return to_nm(values, header.get("wavelength units"), path)


# --------------------------------------------------------------------------- MATLAB
_MAT_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_MAT_INTEGER = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "logical"}


@dataclass(frozen=True)
class _MatVar:
    name: str
    shape: tuple[int, ...]  # MATLAB's order
    matlab_class: str

    def __str__(self) -> str:
        return f"{self.name} [{'x'.join(map(str, self.shape))} {self.matlab_class}]"


def _open_mat(path: Path, what: str, var: str | None, ndim: int) -> Stored:
    import h5py

    if h5py.is_hdf5(path):
        return _open_mat73(path, what, var, ndim)
    import scipy.io

    try:
        variables = [_MatVar(n, tuple(s), c) for n, s, c in scipy.io.whosmat(path)]
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise HsixaiError(f"{path}: {what} is not a readable MATLAB file ({_one_line(exc)})") from None
    chosen = _pick_variable(path, what, variables, var, ndim)
    try:
        array = scipy.io.loadmat(path, variable_names=[chosen.name])[chosen.name]
    except Exception as exc:  # noqa: BLE001
        raise HsixaiError(
            f"{path}: {what} is not a readable MATLAB file: variable {chosen.name!r} ({_one_line(exc)})"
        ) from None
    return Stored(path, array.shape, array.dtype, _slicer(array), name=chosen.name)


def _open_mat73(path: Path, what: str, var: str | None, ndim: int) -> Stored:
    import h5py

    try:
        fh = h5py.File(path, "r")
        variables = []
        for name, item in fh.items():
            if isinstance(item, h5py.Dataset) and not name.startswith("#"):
                cls = item.attrs.get("MATLAB_class", b"")
                cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                variables.append(_MatVar(name, tuple(reversed(item.shape)), cls or str(item.dtype)))
    except (OSError, KeyError, ValueError) as exc:
        raise HsixaiError(f"{path}: {what} is not a readable MATLAB v7.3 file ({_one_line(exc)})") from None
    try:
        chosen = _pick_variable(path, what, variables, var, ndim)
    except HsixaiError:
        fh.close()
        raise
    dataset = fh[chosen.name]
    n = len(dataset.shape)

    def read(axis: int, start: int, stop: int) -> np.ndarray:
        # HDF5 holds MATLAB's column-major array with its axes reversed.
        index = [slice(None)] * n
        index[n - 1 - axis] = slice(start, stop)
        return np.asarray(dataset[tuple(index)]).T

    return Stored(path, chosen.shape, dataset.dtype, read, name=chosen.name, close=fh.close)


def _pick_variable(path: Path, what: str, variables: list[_MatVar], var: str | None, ndim: int) -> _MatVar:
    listing = ", ".join(map(str, variables)) or "none"
    if var is not None:
        for v in variables:
            if v.name == var:
                return v
        raise HsixaiError(f"{path}: no variable {var!r} (variables: {listing})")
    allowed = _MAT_NUMERIC | _MAT_INTEGER if ndim == 2 else _MAT_NUMERIC  # logical: masks only
    numeric = [v for v in variables if len(v.shape) == ndim and v.matlab_class in allowed]
    if ndim == 2:  # a mask: integer variables first, a lone float one if there is no integer one
        integer = [v for v in numeric if v.matlab_class in _MAT_INTEGER]
        numeric = integer or numeric
    if len(numeric) == 1:
        return numeric[0]
    option = "--var" if ndim == 3 else "--train-var/--test-var"
    kind = "3-D numeric" if ndim == 3 else "2-D integer"
    found = "none" if not numeric else f"{len(numeric)}"
    raise HsixaiError(
        f"{path}: {what}: expected exactly one {kind} variable, found {found} "
        f"(variables: {listing}); name it with {option}"
    )


# --------------------------------------------------------------------------- PRISMA Level 2 (.he5)
# The layout, as the PRISMA Products Specification (ASI) and the open readers (prismaread, the EnMAP-Box
# importer, HyperCoast) read it; docs/data.md cites them:
#   HDFEOS/SWATHS/PRS_<level>_HCO/Data Fields/{VNIR,SWIR}_Cube   uint16 DN [rows, bands, columns], row 0 north
#   root attributes  List_Cw_{Vnir,Swir}, List_Fwhm_{Vnir,Swir}   per stored band, in the cubes' band order
#                    (descending wavelength); List_Cw_{Vnir,Swir}_Flags  1 = band in use
#                    L2Scale{Vnir,Swir}{Min,Max}: reflectance = Min + DN * (Max - Min) / 65535
#                    L2D only: Epsg_Code, Product_{UL,LR}corner_{easting,northing}: centres of the corner
#                    pixels of the north-up 30 m map grid
PRISMA_READ = {"L2C": "reflectance in swath geometry", "L2D": "geocoded reflectance"}
PRISMA_OTHER = {"L1": "top-of-atmosphere radiance", "L2B": "at-ground radiance"}
PRISMA_PIXEL_M = 30.0
PRISMA_DN_MAX = 65535.0
PRISMA_BANDS_AT_ONCE = 16
_PRISMA_SWATH = re.compile(r"^PRS_(L\w+?)_HCO$")


@dataclass(frozen=True)
class _Detector:
    """One spectrometer's cube and the bands of it that are used."""

    name: str  # "VNIR" or "SWIR"
    dataset: Any  # h5py.Dataset, uint16 DN [rows, bands, columns]
    used: np.ndarray  # indices along the stored band axis of the bands in use
    wavelengths: np.ndarray  # nm, of the used bands
    fwhm: np.ndarray  # nm, of the used bands
    offset: float  # reflectance of DN 0 (L2Scale*Min)
    gain: float  # reflectance per DN ((Max - Min) / 65535)
    fill: int  # the DN of pixels without data: the dataset's HDF5 fill value (0 unless the product sets one)


def _open_prisma(path: Path, what: str) -> Stored:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise HsixaiError(f"{path}: {what} is not a readable HDF5 file ({_one_line(exc)})") from None
    try:
        return _prisma_stored(fh, path, what)
    except HsixaiError:
        fh.close()
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:  # a damaged file can pass h5py.File()
        fh.close()
        raise HsixaiError(f"{path}: {what}: cannot read the PRISMA product ({_one_line(exc)})") from None


def _prisma_stored(fh: Any, path: Path, what: str) -> Stored:
    level, swath = _prisma_swath(fh, path, what)
    detectors = [_prisma_detector(fh, path, swath, name) for name in ("VNIR", "SWIR")]
    vnir, swir = (d.dataset.shape for d in detectors)
    if (vnir[0], vnir[2]) != (swir[0], swir[2]):
        raise HsixaiError(
            f"{path}: {swath}: expected the VNIR and SWIR cubes on the same rows and columns, found "
            f"VNIR {vnir} and SWIR {swir} [rows, bands, columns]"
        )
    height, width = vnir[0], vnir[2]
    if height < 1 or width < 1:
        raise HsixaiError(f"{path}: {swath}: expected a non-empty cube, found VNIR {vnir} [rows, bands, columns]")
    wavelengths = np.concatenate([d.wavelengths for d in detectors])
    if wavelengths.size == 0:
        raise HsixaiError(f"{path}: no band in use (every List_Cw_*_Flags is 0 or every List_Cw_* is 0)")
    order = np.argsort(wavelengths, kind="stable")  # ascending; VNIR first where both detectors share a centre
    position = np.empty_like(order)
    position[order] = np.arange(order.size)  # where each detector band lands in the merged cube
    slots, start = [], 0
    for d in detectors:
        slots.append(position[start : start + d.used.size])
        start += d.used.size
    n_bands = wavelengths.size

    def read(axis: int, first: int, stop: int) -> np.ndarray:
        """Reflectance [rows, bands, columns] (ascending wavelength), float32, NaN on pixels without data."""
        if axis == 1:
            raise ValueError("a PRISMA cube is read in blocks of rows or columns, not of bands")
        rows = slice(first, min(stop, height)) if axis == 0 else slice(0, height)
        cols = slice(first, min(stop, width)) if axis == 2 else slice(0, width)
        n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
        out = np.empty((n_rows, n_bands, n_cols), dtype=np.float32)
        empty = np.ones((n_rows, n_cols), dtype=bool)
        for d, slot in zip(detectors, slots):
            if d.used.size == 0:
                continue
            dn = d.dataset[rows, :, cols][:, d.used, :]  # one hyperslab per detector, then the used bands
            empty &= (dn == d.fill).all(axis=1)
            # float64 then one rounding to float32, a few bands at a time to keep the float64 copy small
            for b in range(0, d.used.size, PRISMA_BANDS_AT_ONCE):
                out[:, slot[b : b + PRISMA_BANDS_AT_ONCE], :] = (
                    d.offset + dn[:, b : b + PRISMA_BANDS_AT_ONCE].astype(np.float64) * d.gain
                )
        np.copyto(out, np.float32(np.nan), where=empty[:, None, :])
        return out

    notes = []
    georef = _prisma_grid(fh, path, height, width) if level == "L2D" else None
    if level == "L2C":
        notes.append(
            f"{path}: an L2C product is in swath geometry (rows and columns are not a map grid): no "
            f"{paths.RAW_GEOREF} written; use the L2D product of the acquisition for georeferenced maps"
        )
    return Stored(
        path,
        (height, n_bands, width),
        np.dtype(np.float32),
        read,
        band_axis=1,
        band_axis_why=f"PRISMA {level} cubes are [rows, bands, columns]",
        wavelengths=wavelengths[order],
        name=swath,
        close=fh.close,
        georef=georef,
        fwhm=np.concatenate([d.fwhm for d in detectors])[order],
        nan_is_nodata=True,
        notes=tuple(notes),
    )


def _prisma_swath(fh: Any, path: Path, what: str) -> tuple[str, str]:
    """(level, swath path) of the product's hyperspectral swath, PRS_L2C_HCO or PRS_L2D_HCO."""
    import h5py

    swaths = fh.get("HDFEOS/SWATHS")
    if not isinstance(swaths, h5py.Group):
        raise HsixaiError(
            f"{path}: {what}: not a PRISMA Level-2 product: expected the group HDFEOS/SWATHS "
            f"with a swath PRS_L2C_HCO or PRS_L2D_HCO, found no HDFEOS/SWATHS"
        )
    found = {m.group(1): name for name in swaths if (m := _PRISMA_SWATH.match(name))}
    readable = sorted(set(found) & set(PRISMA_READ))
    if len(readable) != 1:
        others = ", ".join(f"{level} ({PRISMA_OTHER[level]})" for level in sorted(set(found) & set(PRISMA_OTHER)))
        listing = ", ".join(sorted(swaths)) or "none"
        raise HsixaiError(
            f"{path}: {what}: expected one PRISMA L2C or L2D hyperspectral swath "
            f"(HDFEOS/SWATHS/PRS_L2C_HCO or PRS_L2D_HCO), found swaths: {listing}"
            + (f"; {others} is not reflectance: convert reads L2C and L2D" if others else "")
        )
    level = readable[0]
    return level, f"HDFEOS/SWATHS/{found[level]}"


def _prisma_detector(fh: Any, path: Path, swath: str, name: str) -> _Detector:
    import h5py

    key = f"{swath}/Data Fields/{name}_Cube"
    dataset = fh.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise HsixaiError(f"{path}: not a PRISMA Level-2 product: dataset {key} not found")
    check_cube(dataset, f"{path}: {key}", "[rows, bands, columns] of DN", kinds="iu")
    suffix = name.capitalize()  # Vnir, Swir
    cw = _prisma_vector(fh, f"List_Cw_{suffix}", path)
    fwhm = _prisma_vector(fh, f"List_Fwhm_{suffix}", path)
    flags = _prisma_vector(fh, f"List_Cw_{suffix}_Flags", path)
    if not cw.size == fwhm.size == flags.size == dataset.shape[1]:
        raise HsixaiError(
            f"{path}: {key}: expected as many bands (axis 1 of [rows, bands, columns]) as values in "
            f"List_Cw_{suffix}, List_Fwhm_{suffix} and List_Cw_{suffix}_Flags, found shape "
            f"{dataset.shape} and {cw.size}, {fwhm.size}, {flags.size} values"
        )
    used = np.flatnonzero((flags == 1) & (cw > 0))
    check_positive_finite(fwhm[used], f"{path}: List_Fwhm_{suffix}", "band widths for the bands in use")
    low, high = (_prisma_number(fh, f"L2Scale{suffix}{end}", path) for end in ("Min", "Max"))
    if not high > low:
        raise HsixaiError(f"{path}: expected L2Scale{suffix}Max > L2Scale{suffix}Min, found {high:g} <= {low:g}")
    fill = dataset.fillvalue
    return _Detector(
        name,
        dataset,
        used,
        cw[used],
        fwhm[used],
        low,
        (high - low) / PRISMA_DN_MAX,
        int(fill) if fill is not None else 0,
    )


def _prisma_attribute(fh: Any, name: str, path: Path) -> np.ndarray:
    if name not in fh.attrs:
        raise HsixaiError(f"{path}: not a PRISMA Level-2 product: root attribute {name!r} not found")
    value = np.asarray(fh.attrs[name])
    if value.dtype.kind in "SU":  # a number written as text
        try:
            value = value.astype(np.float64)
        except ValueError:
            raise HsixaiError(f"{path}: root attribute {name!r}: expected numbers, found {value!r}") from None
    if value.dtype.kind not in "biuf":
        raise HsixaiError(f"{path}: root attribute {name!r}: expected finite numbers, found {value!r}")
    check_finite(value, f"{path}: root attribute {name!r}")
    return value.astype(np.float64)


def _prisma_vector(fh: Any, name: str, path: Path) -> np.ndarray:
    value = _prisma_attribute(fh, name, path)
    if value.ndim != 1:
        raise HsixaiError(f"{path}: root attribute {name!r}: expected a list of numbers, found shape {value.shape}")
    return value


def _prisma_number(fh: Any, name: str, path: Path) -> float:
    value = _prisma_attribute(fh, name, path)
    if value.size != 1:
        raise HsixaiError(f"{path}: root attribute {name!r}: expected one number, found {value.size}")
    return float(value.ravel()[0])


def _prisma_grid(fh: Any, path: Path, height: int, width: int) -> Georef:
    """The L2D map grid: EPSG code, and the corner pixels' centres, 30 m apart, north up."""
    epsg = _prisma_number(fh, "Epsg_Code", path)
    west, north = (_prisma_number(fh, f"Product_ULcorner_{axis}", path) for axis in ("easting", "northing"))
    east, south = (_prisma_number(fh, f"Product_LRcorner_{axis}", path) for axis in ("easting", "northing"))
    for span, pixels, what in (
        (east - west, width, "Product_LRcorner_easting - Product_ULcorner_easting"),
        (north - south, height, "Product_ULcorner_northing - Product_LRcorner_northing"),
    ):
        expected = (pixels - 1) * PRISMA_PIXEL_M
        if abs(span - expected) > PRISMA_PIXEL_M / 2:
            raise HsixaiError(
                f"{path}: corner attributes disagree with the cube's {height} x {width} pixels: "
                f"{what} = {span:g} m, expected ({pixels} - 1) x {PRISMA_PIXEL_M:g} m = {expected:g} m "
                f"(the corners are the centres of the corner pixels)"
            )
    if epsg != int(epsg) or epsg <= 0:
        raise HsixaiError(f"{path}: root attribute 'Epsg_Code': expected a positive integer, found {epsg:g}")
    half = PRISMA_PIXEL_M / 2
    return Georef(
        crs_string(f"EPSG:{int(epsg)}", f"{path}: Epsg_Code {int(epsg)}"),
        (PRISMA_PIXEL_M, 0.0, west - half, 0.0, -PRISMA_PIXEL_M, north + half),
        width,
        height,
        f"{path}: Epsg_Code and Product_ULcorner_* (centre of the upper-left pixel), 30 m pixels",
    )


# --------------------------------------------------------------------------- band axis
def resolve_band_axis(
    cube: Stored, given: int | None, mask_shape: tuple[int, int] | None, n_wavelengths: int | None
) -> int:
    """The band axis: given, fixed by the format, fixed by the masks' shape, or by the wavelength count."""
    ndim = len(cube.shape)
    if given is not None:
        if not -ndim <= given < ndim:
            raise HsixaiError(f"{cube.path}: --band-axis {given} is out of range for a cube of shape {cube.shape}")
        given %= ndim
        if cube.band_axis is not None and given != cube.band_axis:
            raise HsixaiError(
                f"{cube.path}: --band-axis {given} contradicts the file: bands are axis "
                f"{cube.band_axis} of shape {cube.shape} ({cube.band_axis_why})"
            )
        return given
    if cube.band_axis is not None:
        return cube.band_axis
    candidates = list(range(ndim))
    if mask_shape is not None:
        candidates = [
            b for b in candidates if tuple(s for a, s in enumerate(cube.shape) if a != b) == tuple(mask_shape)
        ]
        if not candidates:
            raise HsixaiError(
                f"{cube.path}: no two axes of the cube's shape {cube.shape} match the masks' shape "
                f"{tuple(mask_shape)} (expected [H, W] of the cube)"
            )
    if len(candidates) > 1 and n_wavelengths is not None:
        candidates = [b for b in candidates if cube.shape[b] == n_wavelengths] or candidates
    if len(candidates) == 1:
        return candidates[0]
    raise HsixaiError(
        f"{cube.path}: cannot tell which axis of shape {cube.shape} holds the bands "
        f"(axes {candidates} all fit); pass --band-axis"
    )


# --------------------------------------------------------------------------- masks
def read_mask(path: Path, what: str, var: str | None) -> np.ndarray:
    """A 2-D mask as a C-ordered non-negative integer array (whole-number floats too: MATLAB stores doubles)."""
    return read_mask_and_grid(path, what, var)[0]


def read_mask_and_grid(path: Path, what: str, var: str | None) -> tuple[np.ndarray, Georef | None]:
    """`read_mask`, and the mask's map grid when its file has one (GeoTIFF, ENVI with `map info`)."""
    stored = open_stored(path, what, var, ndim=2)
    where = f"{stored.path}{f' ({stored.name})' if stored.name else ''}: {what}"
    try:
        shape = stored.shape
        if stored.band_axis is not None:  # GeoTIFF or ENVI: one band
            if shape[stored.band_axis] != 1:
                raise HsixaiError(
                    f"{where}: expected a single band, found {shape[stored.band_axis]} ({stored.band_axis_why})"
                )
            shape = tuple(s for a, s in enumerate(shape) if a != stored.band_axis)
        if len(shape) != 2:  # checked before reading: a cube passed as a mask is not loaded
            raise HsixaiError(f"{where}: expected a 2-D array, found shape {stored.shape}")
        mask = stored.read_all().reshape(shape)
    finally:
        stored.close()
    if mask.dtype.kind not in "biuf":
        raise HsixaiError(f"{where}: expected integer labels, found dtype {mask.dtype}")
    if mask.dtype.kind == "f":
        bad = ~np.isfinite(mask) | (mask != np.round(mask))
        if bad.any():
            raise HsixaiError(
                f"{where}: expected integer labels, found {int(bad.sum())} non-integer values "
                f"(e.g. {float(mask[bad].flat[0]):g})"
            )
    if mask.dtype.kind in "if" and (mask < 0).any():
        raise HsixaiError(
            f"{where}: expected labels >= 0 (0 = unlabelled), "
            f"found {np.unique(mask[mask < 0])[:5].astype(np.int64).tolist()}"
        )
    if mask.dtype.kind in "bf":
        top = mask.max(initial=0)
        mask = mask.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int64)
    return np.ascontiguousarray(mask, dtype=mask.dtype.newbyteorder("=")), stored.georef  # h5py's .T: Fortran order


def _check_same_grid(cube: Stored, mask_grid: Georef | None, path: Path, what: str) -> None:
    """A mask with a map grid must lie on the cube's (one without a grid is taken on the cube's pixel grid)."""
    if cube.georef is not None and mask_grid is not None and not cube.georef.same_grid(mask_grid):
        raise HsixaiError(
            f"{path}: {what}: expected the cube's grid ({cube.georef.describe()}), found {mask_grid.describe()}"
        )


# --------------------------------------------------------------------------- convert
@dataclass(frozen=True)
class ConvertRequest:
    cube: Path
    train: Path
    test: Path
    out: Path
    wavelengths: Path | None = None
    band_axis: int | None = None
    var: str | None = None
    train_var: str | None = None
    test_var: str | None = None
    n_classes: int | None = None


def convert(req: ConvertRequest, progress: bool = False, block_bytes: int = BLOCK_BYTES) -> dict:
    """Write the raw format for `req` into req.out atomically. Returns convert.json's content.

    The cube is copied in blocks of rows of about `block_bytes`.
    """
    _check_out_dir(req.out)
    train, train_grid = read_mask_and_grid(req.train, "training mask", req.train_var)
    test, test_grid = read_mask_and_grid(req.test, "test mask", req.test_var)
    if test.shape != train.shape:
        raise HsixaiError(
            f"{req.test}: test mask: expected the training mask's shape {train.shape}, found {test.shape}"
        )
    n_classes = _class_count(req, train, test)

    cube = open_stored(req.cube, "hyperspectral cube", req.var, ndim=3)
    try:
        check_cube(cube, str(cube.path))
        wavelengths = read_wavelength_file(req.wavelengths) if req.wavelengths else cube.wavelengths
        wl_source = req.wavelengths or cube.path
        band_axis = resolve_band_axis(
            cube, req.band_axis, train.shape, None if wavelengths is None else len(wavelengths)
        )
        n_bands = cube.shape[band_axis]
        spatial = tuple(s for a, s in enumerate(cube.shape) if a != band_axis)
        check_mask_shape(train, spatial, f"{req.train}: training mask")
        if wavelengths is not None:
            _check_wavelengths(wavelengths, n_bands, wl_source, cube.path)
        _check_same_grid(cube, train_grid, req.train, "training mask")
        _check_same_grid(cube, test_grid, req.test, "test mask")

        summary = {
            "cube": str(req.cube),
            "variable": cube.name or None,
            "band_axis": band_axis,
            "shape": [n_bands, *spatial],
            "dtype": str(cube.dtype.newbyteorder("=")),
            "train": str(req.train),
            "test": str(req.test),
            "n_classes": n_classes,
            "wavelengths": None if wavelengths is None else str(wl_source),
            "georef": None if cube.georef is None else cube.georef.to_json(),
        }
        with staged_outputs(req.out) as (stage,):
            nodata = _write_cube(cube, band_axis, stage / paths.RAW_CUBE, progress, block_bytes)
            summary["nodata_pixels"] = 0 if nodata is None else int(nodata.sum())
            if nodata is not None:
                for path, mask, what in ((req.train, train, "training mask"), (req.test, test, "test mask")):
                    check_labels_have_data(mask, nodata, f"{path}: {what}")
                np.save(stage / paths.RAW_NODATA, nodata)
            np.save(stage / paths.RAW_TRAIN, train)
            np.save(stage / paths.RAW_TEST, test)
            if wavelengths is not None:
                np.save(stage / paths.RAW_WAVELENGTHS, wavelengths.astype(np.float64))
            if cube.fwhm is not None:
                np.save(stage / paths.RAW_FWHM, cube.fwhm.astype(np.float64))
            if cube.georef is not None:
                write_georef(stage, cube.georef)
            write_json(stage / paths.RAW_CONVERT_SUMMARY, summary)
            _validate(stage, req.out, n_classes)
    finally:
        cube.close()
    # only after success: an error must stay the only line on stderr
    for note in cube.notes:
        log.warning("%s", note)
    if wavelengths is None:
        log.warning("%s: no wavelengths in the file and no --wavelengths: figures will use band numbers", req.cube)
    return summary


def _validate(stage: Path, out: Path, n_classes: int) -> None:
    """The written directory through the reader `prepare` uses; messages name `out`, not the staging directory."""
    readers_log = logging.getLogger(open_raw_scene.__module__)
    level = readers_log.level
    readers_log.setLevel(logging.ERROR)  # its missing-wavelengths warning would name the staging directory
    try:
        open_raw_scene(stage, n_classes)
    except HsixaiError as exc:
        raise HsixaiError(str(exc).replace(str(stage), str(out))) from None
    finally:
        readers_log.setLevel(level)


def _check_out_dir(out: Path) -> None:
    """Refuse to replace a directory that holds anything but an earlier conversion (e.g. the inputs, or `.`)."""
    if out.exists() and not out.is_dir():
        raise HsixaiError(f"{out}: --out must be a directory, found a file")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RAW_FILES)
        if foreign:
            raise HsixaiError(
                f"{out}: --out holds files that are not raw-format files ({', '.join(foreign[:3])}); "
                f"choose a new or empty directory"
            )


def _class_count(req: ConvertRequest, train: np.ndarray, test: np.ndarray) -> int:
    top = int(max(train.max(initial=0), test.max(initial=0)))
    if req.n_classes is None:
        if top == 0:
            raise HsixaiError(f"{req.train}: training mask: no labelled pixels (all labels are 0)")
        return top
    if req.n_classes < 1:
        raise HsixaiError(f"--classes: expected a positive number of classes, found {req.n_classes}")
    for path, mask, what in ((req.train, train, "training mask"), (req.test, test, "test mask")):
        check_labels(mask, req.n_classes, f"{path}: {what}", "--classes")
    return req.n_classes


def _check_wavelengths(wavelengths: np.ndarray, n_bands: int, source: Path, cube: Path) -> None:
    check_length(wavelengths, n_bands, str(source), f"wavelengths (one per band of {cube.name})")
    check_positive_finite(wavelengths, str(source), "wavelengths")


def _write_cube(cube: Stored, band_axis: int, path: Path, progress: bool, block_bytes: int) -> np.ndarray | None:
    """Copy blocks of rows into a [bands, H, W] .npy, counting NaN/Inf per band on the way.

    Each block [bands, rows, W] lands as one contiguous write per band, so
    memory holds a block (and its reordered copy), never the cube. Where the
    reader marks pixels without data by NaN in every band (`nan_is_nodata`),
    those pixels are not counted and their mask [H, W] is returned (None when
    the reader marks none, or no pixel is without data).
    """
    n_bands = cube.shape[band_axis]
    row_axis = 1 if band_axis == 0 else 0
    height, width = (s for a, s in enumerate(cube.shape) if a != band_axis)
    dtype = cube.dtype.newbyteorder("=")
    rows = max(1, block_bytes // max(1, n_bands * width * dtype.itemsize))
    bad = np.zeros(n_bands, dtype=np.int64)
    nodata = np.zeros((height, width), dtype=bool) if cube.nan_is_nodata else None
    with open(path, "wb") as fh:
        npy_format.write_array_header_2_0(
            fh, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_bands, height, width)}
        )
        offset = fh.tell()
        for start in tqdm(range(0, height, rows), desc="convert: rows", unit="block", disable=not progress):
            try:
                block = cube.read(row_axis, start, min(start + rows, height))
            except (OSError, ValueError) as exc:  # a damaged file can pass its header and fail here
                raise HsixaiError(f"{cube.path}: cannot read rows {start}.. of the cube ({_one_line(exc)})") from None
            block = np.moveaxis(block, band_axis, 0)
            if dtype.kind == "f":
                empty = None
                if nodata is not None:
                    empty = np.isnan(block).all(axis=0)  # [rows, W]
                    nodata[start : start + block.shape[1]] = empty
                bad += non_finite(block, ignore=empty).sum(axis=(1, 2))
            for b in range(n_bands):
                fh.seek(offset + (b * height + start) * width * dtype.itemsize)
                np.ascontiguousarray(block[b], dtype=dtype).tofile(fh)
    check_finite_per_band(bad, str(cube.path))
    if nodata is not None and nodata.all():
        raise HsixaiError(f"{cube.path}: every pixel is fill (no data in any band); expected an acquisition")
    return nodata if nodata is not None and nodata.any() else None
