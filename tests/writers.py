"""Real files in the formats `hsixai convert` reads, written the way other tools write them.

rasterio for GeoTIFF, a hand-written ENVI header, scipy for .mat v5, h5py in MATLAB's v7.3 layout, and
PRISMA Level-2 products (.he5) laid out as the PRISMA Products Specification gives (docs/data.md, "PRISMA
products"). Used by tests/unit/test_readers.py, test_georef.py, test_prisma.py, test_bad_input.py and
tests/pipeline/test_real_formats.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io

B, H, W = 7, 5, 6  # the small scene's bands, rows, columns: all different, so a wrong axis shows


# --------------------------------------------------------------------------- ENVI, GeoTIFF, MATLAB
ENVI_CODES = {"u1": 1, "i2": 2, "i4": 3, "f4": 4, "f8": 5, "u2": 12, "u4": 13, "i8": 14, "u8": 15}
ENVI_ORDER = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}  # [bands, lines, samples] -> file order


def write_envi(
    data_path: Path,
    cube: np.ndarray,
    interleave: str = "bsq",
    big_endian: bool = False,
    wavelengths=None,
    units: str | None = "Nanometers",
    offset: int = 0,
    header_path: Path | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """`cube` [bands, lines, samples] as an ENVI data file and its header (default: data_path with .hdr)."""
    dtype = cube.dtype.newbyteorder(">" if big_endian else "<")
    body = np.ascontiguousarray(cube.transpose(ENVI_ORDER[interleave]), dtype=dtype).tobytes()
    data_path.write_bytes(b"\0" * offset + body)
    entries = {
        "description": "{written by the hsixai tests}",
        "samples": cube.shape[2],
        "lines": cube.shape[1],
        "bands": cube.shape[0],
        "header offset": offset,
        "file type": "ENVI Standard",
        "data type": ENVI_CODES[cube.dtype.str[1:]],
        "interleave": interleave,
        "byte order": int(big_endian),
    }
    if wavelengths is not None:
        values = ",\n  ".join(f"{v:.10g}" for v in wavelengths)
        entries["wavelength"] = "{\n  " + values + "}"
        if units is not None:
            entries["wavelength units"] = units
    lines = ["ENVI"] + [f"{k} = {v}" for k, v in entries.items() if k not in drop]
    header_path = header_path or data_path.with_suffix(".hdr")
    header_path.write_text("\n".join(lines) + "\n")
    return header_path


def write_geotiff(path: Path, cube: np.ndarray, wavelengths=None, style: str = "description") -> Path:
    """`cube` [bands, H, W] (or a mask [H, W]) as a GeoTIFF; wavelengths (nm) in descriptions or as µm tags."""
    import rasterio

    cube = cube[None] if cube.ndim == 2 else cube
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=cube.shape[0],
        height=cube.shape[1],
        width=cube.shape[2],
        dtype=cube.dtype,
        crs="EPSG:32630",
        transform=rasterio.Affine(30, 0, 230000, 0, -30, 4150000),
    ) as dst:
        dst.write(cube)
        for i in range(cube.shape[0]):
            if wavelengths is None:
                continue
            if style == "description":
                dst.set_band_description(i + 1, f"band {i + 1} ({wavelengths[i]:.4f} nm)")
            else:
                dst.update_tags(i + 1, wavelength=f"{wavelengths[i] / 1000:.7f}", wavelength_units="Micrometers")
    return path


MATLAB_CLASS = {
    "f8": "double",
    "f4": "single",
    "u1": "uint8",
    "i1": "int8",
    "u2": "uint16",
    "i2": "int16",
    "u4": "uint32",
    "i4": "int32",
    "u8": "uint64",
    "i8": "int64",
    "b1": "logical",
}


def write_mat73(path: Path, **variables: np.ndarray) -> Path:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 after a 512-byte header, each array with its axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        for name, array in variables.items():
            stored = array.astype(np.uint8) if array.dtype == bool else array
            fh.create_dataset(name, data=np.ascontiguousarray(stored.T))
            fh[name].attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASS[array.dtype.str[1:]])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sat Nov 21 07:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    return path


def write_mat5(path: Path, **variables: np.ndarray) -> Path:
    scipy.io.savemat(path, variables, do_compression=True)
    return path


# --------------------------------------------------------------------------- a small scene
def scene(dtype=np.float32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cube [B, H, W], train and test masks [H, W] (labels 1..3), wavelengths (nm)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        cube = rng.normal(size=(B, H, W)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        cube = rng.integers(max(info.min, -1000), min(info.max, 1000), size=(B, H, W), endpoint=True).astype(dtype)
    train = np.zeros((H, W), dtype=np.uint8)
    test = np.zeros((H, W), dtype=np.uint8)
    train[:, :2] = [1, 2]
    train[0, 2] = 3
    test[:, 4:] = [3, 1]
    test[4, 3] = 2
    wavelengths = np.linspace(402.5, 2497.25, B)
    return cube, train, test, wavelengths


def masks_npy(tmp_path: Path, train: np.ndarray, test: np.ndarray) -> tuple[Path, Path]:
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    return tmp_path / "train.npy", tmp_path / "test.npy"


# --------------------------------------------------------------------------- PRISMA Level 2 (.he5)
PRISMA_H, PRISMA_W = 6, 7
# In the sensor's order: descending wavelength, unused slots (centre 0, flag 0) at the ends as in real products.
# VNIR slot 5 has a centre but is flagged unused; VNIR slot 2 is flagged used but has no centre: both are dropped.
VNIR_CW = np.array([0.0, 0.0, 0.0, 972.65, 951.38, 900.0, 800.5, 650.25, 402.45], dtype=np.float32)
VNIR_FLAGS = np.array([0, 0, 1, 1, 1, 0, 1, 1, 1], dtype=np.uint8)
SWIR_CW = np.array([2496.88, 2400.0, 1900.0, 1200.0, 1000.5, 962.28, 942.96, 0.0, 0.0], dtype=np.float32)
SWIR_FLAGS = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0], dtype=np.uint8)
VNIR_SCALE = (0.0, 1.25)
SWIR_SCALE = (-0.02, 0.9)
EPSG = 32632
UL_CENTRE = (300015.0, 4500015.0)  # easting, northing of the upper-left pixel's centre


def _fwhm(cw: np.ndarray) -> np.ndarray:
    return np.where(cw > 0, 8.0 + cw / 250.0, 0.0).astype(np.float32)


@dataclass
class Product:
    path: Path
    cube: np.ndarray  # float32 [bands, H, W], ascending wavelength, NaN where there is no data
    wavelengths: np.ndarray  # nm, ascending
    fwhm: np.ndarray
    nodata: np.ndarray  # bool [H, W]
    transform: tuple  # rasterio order, pixel corners
    vnir: np.ndarray  # bool [bands]: the band comes from the VNIR cube


def write_prisma(
    path: Path,
    height: int = PRISMA_H,
    width: int = PRISMA_W,
    level: str = "L2D",
    seed: int = 0,
    drop_attribute: str | None = None,
    vnir_bands: int | None = None,
    corner_shift: float = 0.0,
) -> Product:
    """A PRISMA `level` product at `path` and the raw-format cube convert must make of it.

    drop_attribute leaves a root attribute out; vnir_bands stores that many VNIR bands instead of
    len(VNIR_CW) (a cube that disagrees with its attributes); corner_shift moves the LR corner (m).
    """
    rng = np.random.default_rng(seed)
    nodata = np.zeros((height, width), dtype=bool)
    nodata[0, : width // 2] = True  # the corner of a rotated swath: no data in any band
    nodata[-1, -1] = True
    cubes, truth = {}, []
    for name, cw, flags, scale in (
        ("VNIR", VNIR_CW, VNIR_FLAGS, VNIR_SCALE),
        ("SWIR", SWIR_CW, SWIR_FLAGS, SWIR_SCALE),
    ):
        low, high = (float(np.float32(v)) for v in scale)  # as the float32 attributes hold them
        dn = rng.integers(1, 65535, size=(height, cw.size, width), endpoint=True).astype(np.uint16)
        # Pixels with data whose DN is 0 (reflectance = Min) or 65535 (= Max) in every band of one detector only.
        low_pixel, high_pixel = ((1, 1), (2, 2)) if name == "VNIR" else ((4, 2), (3, 3))
        dn[low_pixel[0], :, low_pixel[1]] = 0
        dn[high_pixel[0], :, high_pixel[1]] = 65535
        dn[:, :, :][np.broadcast_to(nodata[:, None, :], dn.shape)] = 0
        cubes[name] = dn
        for b in np.flatnonzero((flags == 1) & (cw > 0)):
            band = (low + dn[:, b, :].astype(np.float64) * (high - low) / 65535.0).astype(np.float32)
            band[nodata] = np.nan
            truth.append((float(cw[b]), float(_fwhm(cw)[b]), band, name == "VNIR"))
    truth.sort(key=lambda t: t[0])
    if vnir_bands is not None:
        cubes["VNIR"] = cubes["VNIR"][:, :vnir_bands, :]
    swath = f"HDFEOS/SWATHS/PRS_{level}_HCO"
    west, north = UL_CENTRE
    east, south = west + (width - 1) * 30.0 + corner_shift, north - (height - 1) * 30.0
    attrs = {
        "Processing_Level": np.bytes_(level[1:]),
        "Product_ID": np.bytes_(f"PRS_{level}_STD"),
        "List_Cw_Vnir": VNIR_CW,
        "List_Cw_Vnir_Flags": VNIR_FLAGS,
        "List_Fwhm_Vnir": _fwhm(VNIR_CW),
        "List_Cw_Swir": SWIR_CW,
        "List_Cw_Swir_Flags": SWIR_FLAGS,
        "List_Fwhm_Swir": _fwhm(SWIR_CW),
        "L2ScaleVnirMin": np.float32(VNIR_SCALE[0]),
        "L2ScaleVnirMax": np.float32(VNIR_SCALE[1]),
        "L2ScaleSwirMin": np.float32(SWIR_SCALE[0]),
        "L2ScaleSwirMax": np.float32(SWIR_SCALE[1]),
    }
    if level == "L2D":
        attrs.update(
            {
                "Epsg_Code": np.int32(EPSG),
                "Projection_Name": np.bytes_("UTM"),
                "Projection_Id": np.bytes_("32"),
                "Product_ULcorner_easting": west,
                "Product_ULcorner_northing": north,
                "Product_URcorner_easting": east,
                "Product_URcorner_northing": north,
                "Product_LLcorner_easting": west,
                "Product_LLcorner_northing": south,
                "Product_LRcorner_easting": east,
                "Product_LRcorner_northing": south,
            }
        )
    with h5py.File(path, "w") as fh:
        for key, value in attrs.items():
            if key != drop_attribute:
                fh.attrs[key] = value
        for name, dn in cubes.items():
            fh.create_dataset(
                f"{swath}/Data Fields/{name}_Cube", data=dn, chunks=(1, dn.shape[1], width), compression="gzip"
            )
            fh.create_dataset(f"{swath}/Data Fields/{name}_PIXEL_L2_ERR_MATRIX", data=np.zeros(dn.shape, np.uint8))
        fh.create_dataset(f"{swath}/Geolocation Fields/Latitude", data=np.full((height, width), 45.0, np.float32))
        fh.create_dataset(f"{swath}/Geolocation Fields/Longitude", data=np.full((height, width), 9.0, np.float32))
        pan = f"HDFEOS/SWATHS/PRS_{level}_PCO/Data Fields/Cube"  # the panchromatic swath: not read
        fh.create_dataset(pan, data=np.ones((height * 6, width * 6), np.uint16))
    return Product(
        path,
        np.stack([t[2] for t in truth]),
        np.array([t[0] for t in truth]),
        np.array([t[1] for t in truth]),
        nodata,
        (30.0, 0.0, west - 15.0, 0.0, -30.0, north + 15.0),
        np.array([t[3] for t in truth]),
    )


def write_l2d_scene(path: Path, cube: np.ndarray, wavelengths: np.ndarray) -> None:
    """`cube` [bands, H, W] reflectance in 0..1 as a PRISMA L2D product: VNIR (< 1000 nm) and SWIR cubes
    [rows, bands, columns] in descending wavelength with unused slots, DN = round(reflectance * 65535)."""
    vnir = wavelengths < 1000
    height, width = cube.shape[1:]
    with h5py.File(path, "w") as fh:
        for name, pick, pad in (("Vnir", vnir, (3, 0)), ("Swir", ~vnir, (0, 2))):
            bands = np.flatnonzero(pick)[::-1]
            cw = np.pad(wavelengths[bands].astype(np.float32), pad)
            dn = np.round(cube[bands] * 65535).astype(np.uint16).transpose(1, 0, 2)
            dn = np.pad(dn, ((0, 0), pad, (0, 0)))
            fh.create_dataset(f"HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/{name.upper()}_Cube", data=dn)
            fh.attrs[f"List_Cw_{name}"] = cw
            fh.attrs[f"List_Cw_{name}_Flags"] = (cw > 0).astype(np.uint8)
            fh.attrs[f"List_Fwhm_{name}"] = np.where(cw > 0, 10.0, 0.0).astype(np.float32)
            fh.attrs[f"L2Scale{name}Min"], fh.attrs[f"L2Scale{name}Max"] = np.float32(0), np.float32(1)
        fh.attrs["Epsg_Code"] = np.int32(32629)
        fh.attrs["Product_ULcorner_easting"], fh.attrs["Product_ULcorner_northing"] = 752565.0, 4115535.0
        fh.attrs["Product_LRcorner_easting"] = 752565.0 + (width - 1) * 30.0
        fh.attrs["Product_LRcorner_northing"] = 4115535.0 - (height - 1) * 30.0
