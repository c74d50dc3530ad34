"""PRISMA Level-2 products (.he5) through `convert` and `prepare`.

`write_prisma` (tests/writers.py) writes a small product with the layout the PRISMA Products
Specification gives and the open readers use (docs/data.md, "PRISMA products"):
VNIR and SWIR cubes of uint16 DN stored [rows, bands, columns] in the swath
HDFEOS/SWATHS/PRS_L2D_HCO (or L2C), bands in the sensor's order (descending
wavelength, zero-wavelength slots at the ends, some flagged unused), the
L2Scale*Min/Max, List_Cw_*, List_Fwhm_*, List_Cw_*_Flags root attributes,
pixels without data (DN 0 in every band), and for L2D the EPSG code and the
corner pixels' centres. It also returns what `convert` must make of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from hsixai.config import params_from_dict
from hsixai.data import prepare
from hsixai.data.formats import ConvertRequest, convert, open_stored
from hsixai.errors import HsixaiError
from hsixai.paths import Paths

from ..conftest import tiny_params
from ..writers import EPSG, PRISMA_H, PRISMA_W, SWIR_SCALE, VNIR_SCALE, Product, masks_npy, write_prisma

H, W = PRISMA_H, PRISMA_W


def labelled_masks(nodata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and test masks with three classes, none on a pixel without data."""
    height, width = nodata.shape
    train = np.zeros((height, width), dtype=np.uint8)
    test = np.zeros((height, width), dtype=np.uint8)
    train[1:, :3] = np.array([1, 2, 3], dtype=np.uint8)
    test[2:-1, 4:] = np.array([3, 2, 1], dtype=np.uint8)[: width - 4]
    assert not ((train > 0) | (test > 0))[nodata].any()
    return train, test


def convert_product(tmp_path: Path, product: Product, **kw) -> Path:
    train, test = labelled_masks(product.nodata)
    out = tmp_path / "raw"
    convert(ConvertRequest(product.path, *masks_npy(tmp_path, train, test), out), **kw)
    return out


# --------------------------------------------------------------------------- the layout, read
def test_stored_view_of_a_product(tmp_path):
    product = write_prisma(tmp_path / "p.he5")
    stored = open_stored(product.path, "cube")
    try:
        assert stored.shape == (H, 11, W) and stored.band_axis == 1 and stored.dtype == np.float32
        assert stored.name == "HDFEOS/SWATHS/PRS_L2D_HCO"
        np.testing.assert_array_equal(stored.wavelengths, product.wavelengths)
        # rows and columns come alike; bands are ascending across both detectors (the overlap interleaves)
        np.testing.assert_array_equal(stored.read(0, 2, 4), product.cube[:, 2:4].transpose(1, 0, 2))
        np.testing.assert_array_equal(stored.read(2, 3, 5), product.cube[:, :, 3:5].transpose(1, 0, 2))
    finally:
        stored.close()
    assert list(product.wavelengths) == sorted(product.wavelengths)
    assert [round(w) for w in product.wavelengths[:6]] == [402, 650, 800, 943, 951, 962]


@pytest.mark.parametrize("block_bytes", [1, 64 * 2**20])  # one row at a time, the whole cube at once
def test_l2d_converts_to_reflectance_wavelengths_and_grid(tmp_path, block_bytes):
    product = write_prisma(tmp_path / "PRS_L2D_STD_20200527.he5")
    out = convert_product(tmp_path, product, block_bytes=block_bytes)

    cube = np.load(out / "hsi.npy")
    assert cube.dtype == np.float32 and cube.shape == (11, H, W)
    np.testing.assert_array_equal(cube, product.cube)  # NaN exactly on the pixels without data
    assert np.isnan(cube[:, product.nodata]).all() and np.isfinite(cube[:, ~product.nodata]).all()
    # DN 0 and 65535 on pixels with data: the scale's ends, per detector
    vnir = product.vnir
    assert vnir.sum() == 5 and list(vnir[3:7]) == [False, True, False, True]  # the detectors' overlap interleaves
    np.testing.assert_array_equal(cube[vnir, 1, 1], np.float32(VNIR_SCALE[0]))
    np.testing.assert_array_equal(cube[vnir, 2, 2], np.float32(VNIR_SCALE[1]))
    np.testing.assert_array_equal(cube[~vnir, 4, 2], np.float32(SWIR_SCALE[0]))
    np.testing.assert_array_equal(cube[~vnir, 3, 3], np.float32(SWIR_SCALE[1]))
    assert not product.nodata[[1, 2, 4, 3], [1, 2, 2, 3]].any()  # the other detector has data there

    np.testing.assert_allclose(np.load(out / "wavelengths.npy"), product.wavelengths, rtol=0, atol=1e-3)
    assert 900.0 not in np.round(np.load(out / "wavelengths.npy"), 2)  # flagged unused
    assert 1900.0 not in np.round(np.load(out / "wavelengths.npy"), 2)
    np.testing.assert_allclose(np.load(out / "fwhm.npy"), product.fwhm, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / "nodata.npy"), product.nodata)

    georef = json.loads((out / "georef.json").read_text())
    assert georef["crs"] == f"EPSG:{EPSG}" and (georef["height"], georef["width"]) == (H, W)
    assert georef["transform"] == list(product.transform)
    summary = json.loads((out / "convert.json").read_text())
    assert summary["nodata_pixels"] == int(product.nodata.sum()) and summary["georef"] == georef
    assert summary["dtype"] == "float32" and summary["shape"] == [11, H, W]


def test_grid_puts_pixel_centres_on_the_corner_attributes(tmp_path):
    import rasterio

    product = write_prisma(tmp_path / "p.he5", height=9, width=4)
    out = convert_product(tmp_path, product)
    georef = json.loads((out / "georef.json").read_text())
    affine = rasterio.Affine(*georef["transform"])
    with h5py.File(product.path) as fh:
        ul = (fh.attrs["Product_ULcorner_easting"], fh.attrs["Product_ULcorner_northing"])
        lr = (fh.attrs["Product_LRcorner_easting"], fh.attrs["Product_LRcorner_northing"])
    assert affine @ (0.5, 0.5) == pytest.approx(ul)  # (col, row) of the upper-left pixel's centre
    assert affine @ (4 - 0.5, 9 - 0.5) == pytest.approx(lr)
    assert (affine.a, -affine.e) == (30.0, 30.0)


def test_l2c_converts_without_a_map_grid(tmp_path, caplog):
    product = write_prisma(tmp_path / "PRS_L2C_STD.he5", level="L2C")
    with caplog.at_level(logging.WARNING):
        out = convert_product(tmp_path, product)
    np.testing.assert_array_equal(np.load(out / "hsi.npy"), product.cube)
    assert not (out / "georef.json").exists()
    assert "L2C product is in swath geometry" in caplog.text


def test_product_hdf5_fill_value_marks_no_data(tmp_path):
    # A product that declares its fill value in the HDF5 dataset (here 65535) has its no-data pixels there.
    product = write_prisma(tmp_path / "p.he5")
    with h5py.File(product.path, "r+") as fh:
        for name in ("VNIR", "SWIR"):
            key = f"HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/{name}_Cube"
            dn = fh[key][()]
            dn[np.broadcast_to(product.nodata[:, None, :], dn.shape)] = 65535
            del fh[key]
            fh.create_dataset(key, data=dn, fillvalue=65535)
    out = convert_product(tmp_path, product)
    np.testing.assert_array_equal(np.load(out / "nodata.npy"), product.nodata)
    np.testing.assert_array_equal(np.isnan(np.load(out / "hsi.npy")[0]), product.nodata)


def test_geotiff_masks_on_the_product_grid(tmp_path):
    import rasterio

    product = write_prisma(tmp_path / "p.he5")
    train, test = labelled_masks(product.nodata)
    for name, mask, transform in (
        ("train.tif", train, product.transform),
        ("test.tif", test, (30.0, 0.0, product.transform[2] + 30.0, 0.0, -30.0, product.transform[5])),
    ):
        with rasterio.open(
            tmp_path / name,
            "w",
            driver="GTiff",
            count=1,
            height=H,
            width=W,
            dtype="uint8",
            crs=f"EPSG:{EPSG}",
            transform=rasterio.Affine(*transform),
        ) as dst:
            dst.write(mask[None])
    np.save(tmp_path / "test.npy", test)
    out = tmp_path / "raw"
    convert(ConvertRequest(product.path, tmp_path / "train.tif", tmp_path / "test.npy", out))
    np.testing.assert_array_equal(np.load(out / "train_crops.npy"), train)
    with pytest.raises(
        HsixaiError,
        match=r"test.tif: test mask: expected the cube's grid \(EPSG:32632, upper-left "
        r"corner \(300000.000, 4500030.000\).*found EPSG:32632, upper-left corner "
        r"\(300030.000",
    ):
        convert(ConvertRequest(product.path, tmp_path / "train.tif", tmp_path / "test.tif", tmp_path / "raw2"))
    assert not (tmp_path / "raw2").exists()


def test_a_label_on_a_pixel_without_data_is_refused(tmp_path):
    product = write_prisma(tmp_path / "p.he5")
    train, test = labelled_masks(product.nodata)
    train[0, 0] = 2
    with pytest.raises(
        HsixaiError,
        match=r"train.npy: training mask: expected labels only where the cube has data, "
        r"found 1 labelled pixels on no-data pixels \(first at row 0, column 0\)",
    ):
        convert(ConvertRequest(product.path, *masks_npy(tmp_path, train, test), tmp_path / "raw"))
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- prepare on a converted product
def _prepare(tmp_path: Path, raw: Path) -> Paths:
    params = params_from_dict(
        tiny_params(data={"raw_dir": str(raw), "class_names": ["a", "b", "c"], "remove_bands": [1]})
    )
    paths = Paths.at(tmp_path / "root")
    prepare.run(params, paths, progress=False)
    return paths


def test_prepare_ignores_pixels_without_data_in_checks_and_scaling(tmp_path):
    product = write_prisma(tmp_path / "p.he5")
    raw = convert_product(tmp_path, product)
    paths = _prepare(tmp_path, raw)

    cube = np.load(paths.prepared_cube)
    kept = np.load(paths.prepared_dir / "bands.npy")
    assert list(kept) == [0] + list(range(2, 11)) and np.isfinite(cube).all()
    valid = ~product.nodata
    band_range = np.load(paths.prepared_dir / "band_range.npy")
    for i, b in enumerate(kept):
        raw_band = product.cube[b]
        lo, hi = raw_band[valid].min(), raw_band[valid].max()  # the range of the pixels with data only
        np.testing.assert_array_equal(band_range[:, i], [lo, hi])
        expected = np.clip((raw_band - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(cube[i][valid], expected[valid], rtol=0, atol=1e-6)
        assert cube[i][valid].min() == 0.0 and cube[i][valid].max() == pytest.approx(1.0)
        # pixels without data hold the band's mean over the pixels with data
        np.testing.assert_allclose(cube[i][product.nodata], expected[valid].mean(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.load(paths.prepared_dir / "nodata.npy"), product.nodata)
    assert (paths.prepared_dir / "georef.json").read_bytes() == (raw / "georef.json").read_bytes()
    meta = json.loads((paths.prepared_dir / "meta.json").read_text())
    assert meta["nodata_pixels"] == int(product.nodata.sum()) and meta["georeferenced"] is True


def test_prepare_still_refuses_nan_on_pixels_with_data(tmp_path):
    product = write_prisma(tmp_path / "p.he5")
    raw = convert_product(tmp_path, product)
    cube = np.load(raw / "hsi.npy")
    cube[3, 4, 5] = np.nan
    np.save(raw / "hsi.npy", cube)
    with pytest.raises(HsixaiError, match=r"hsi.npy: band 3 has 1 NaN or Inf values \(first at row 4, column 5\)"):
        _prepare(tmp_path, raw)


def test_prepare_without_nodata_or_grid_is_unchanged(tmp_path):
    # The same cube with every pixel valid: no nodata.npy, no georef.json in, none out.
    product = write_prisma(tmp_path / "p.he5")
    raw = convert_product(tmp_path, product)
    cube = np.load(raw / "hsi.npy")
    cube[np.isnan(cube)] = 0.5
    np.save(raw / "hsi.npy", cube)
    (raw / "nodata.npy").unlink()
    (raw / "georef.json").unlink()
    paths = _prepare(tmp_path, raw)
    assert not (paths.prepared_dir / "nodata.npy").exists() and not (paths.prepared_dir / "georef.json").exists()
    meta = json.loads((paths.prepared_dir / "meta.json").read_text())
    assert meta["nodata_pixels"] == 0 and meta["georeferenced"] is False
    prepared = np.load(paths.prepared_cube)
    kept = np.load(paths.prepared_dir / "bands.npy")
    lo, hi = cube[kept].min(axis=(1, 2), keepdims=True), cube[kept].max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(prepared, (cube[kept] - lo) / (hi - lo), rtol=0, atol=1e-6)  # every pixel counts


# --------------------------------------------------------------------------- products that disagree with themselves
def _edit(path: Path, edit) -> None:
    with h5py.File(path, "r+") as fh:
        edit(fh)


def _swir_one_column_short(fh) -> None:
    key = "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/SWIR_Cube"
    dn = fh[key][()]
    del fh[key]
    fh.create_dataset(key, data=dn[:, :, :-1])


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            _swir_one_column_short,
            rf"expected the VNIR and SWIR cubes on the same rows and columns, found VNIR "
            rf"\({H}, 9, {W}\) and SWIR \({H}, 9, {W - 1}\)",
        ),
        (
            lambda fh: fh.attrs.__setitem__("L2ScaleSwirMax", np.float32(-0.5)),
            r"expected L2ScaleSwirMax > L2ScaleSwirMin, found -0.5 <= -0.02",
        ),
        (
            lambda fh: fh.attrs.__setitem__("List_Cw_Swir_Flags", np.ones(8, np.uint8)),
            r"SWIR_Cube: expected as many bands .* found shape \(6, 9, 7\) and 9, 9, 8 values",
        ),
        (
            lambda fh: fh.attrs.__setitem__("Epsg_Code", np.int32(999999)),
            r"Epsg_Code 999999: coordinate reference system",
        ),
        (
            lambda fh: fh.attrs.__setitem__("List_Fwhm_Vnir", np.zeros(9, np.float32)),
            r"List_Fwhm_Vnir: expected positive finite band widths for the bands in use, "
            r"found 5 NaN, Inf or values <= 0",
        ),
        (
            lambda fh: fh.attrs.__setitem__("L2ScaleVnirMin", np.bytes_("zero")),
            r"root attribute 'L2ScaleVnirMin': expected numbers",
        ),
    ],
)
def test_a_product_that_disagrees_with_itself_is_refused(tmp_path, edit, message):
    product = write_prisma(tmp_path / "p.he5")
    _edit(product.path, edit)
    with pytest.raises(HsixaiError, match=message):
        convert_product(tmp_path, product)
    assert not (tmp_path / "raw").exists()
