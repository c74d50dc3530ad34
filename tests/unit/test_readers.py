"""Readers of real hyperspectral files and `convert`: each format round-trips a small cube exactly.

The files are made by tests/writers.py, the way other tools make them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hsixai.data.formats import ConvertRequest, convert, open_stored, parse_envi_header, resolve_band_axis, to_nm
from hsixai.errors import HsixaiError

from ..writers import B, H, W, masks_npy, scene, write_envi, write_geotiff, write_mat5, write_mat73


def check_raw(out: Path, cube: np.ndarray, train: np.ndarray, test: np.ndarray, wavelengths=None) -> None:
    got = np.load(out / "hsi.npy")
    assert got.dtype == cube.dtype.newbyteorder("=") and got.dtype.isnative
    assert got.shape == cube.shape
    np.testing.assert_array_equal(got, cube)
    for name, mask in (("train_crops.npy", train), ("test_crops.npy", test)):
        got_mask = np.load(out / name)
        assert got_mask.flags.c_contiguous and got_mask.dtype.isnative, name
        np.testing.assert_array_equal(got_mask, mask)
    if wavelengths is None:
        assert not (out / "wavelengths.npy").exists()
    else:
        np.testing.assert_allclose(np.load(out / "wavelengths.npy"), wavelengths, atol=1e-3, rtol=0)
    assert sorted(p.name for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name) == []


def run_convert(tmp_path: Path, cube_path: Path, train: Path, test: Path, **kw) -> Path:
    out = tmp_path / "raw"
    summary = convert(ConvertRequest(cube=cube_path, train=train, test=test, out=out, **kw))
    assert json.loads((out / "convert.json").read_text()) == summary
    return out


# --------------------------------------------------------------------------- NumPy
@pytest.mark.parametrize("layout", ["bhw", "hwb", "hbw"])
def test_npy_band_axis_found_from_the_masks(tmp_path, layout):
    cube, train, test, _ = scene(np.int16)
    stored = cube.transpose({"bhw": (0, 1, 2), "hwb": (1, 2, 0), "hbw": (1, 0, 2)}[layout])
    np.save(tmp_path / "cube.npy", stored)
    out = run_convert(tmp_path, tmp_path / "cube.npy", *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test)
    assert json.loads((out / "convert.json").read_text())["band_axis"] == layout.index("b")


def test_npy_fortran_order_and_wavelength_file_in_micrometres(tmp_path):
    cube, train, test, wl = scene(np.float64)
    np.save(tmp_path / "cube.npy", np.asfortranarray(cube))
    (tmp_path / "wl.txt").write_text("\n".join(f"{v / 1000:.8f}" for v in wl))
    out = run_convert(
        tmp_path, tmp_path / "cube.npy", *masks_npy(tmp_path, train, test), wavelengths=tmp_path / "wl.txt"
    )
    check_raw(out, cube, train, test, wl)


# --------------------------------------------------------------------------- ENVI
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint16, np.float64])
def test_envi_round_trip(tmp_path, interleave, big_endian, dtype):
    cube, train, test, wl = scene(dtype)
    header = write_envi(
        tmp_path / "scene.img", cube, interleave, big_endian, wl / 1000, units="Micrometers", offset=128
    )
    out = run_convert(tmp_path, header, *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test, wl)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.int64, np.uint64])
def test_envi_every_integer_data_type(tmp_path, dtype):
    cube, train, test, wl = scene(dtype)
    write_envi(tmp_path / "scene.dat", cube, "bil", big_endian=True, wavelengths=wl)
    out = run_convert(tmp_path, tmp_path / "scene.dat", *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test, wl)


@pytest.mark.parametrize(
    "data_name,header_name",
    [("scene", "scene.hdr"), ("scene.bip", "scene.hdr"), ("scene.img", "scene.img.hdr"), ("scene.RAW", "scene.hdr")],
)
def test_envi_data_file_found_next_to_the_header(tmp_path, data_name, header_name):
    cube, train, test, wl = scene()
    write_envi(tmp_path / data_name, cube, "bip", wavelengths=wl, header_path=tmp_path / header_name)
    for given in (tmp_path / header_name, tmp_path / data_name):
        stored = open_stored(given, "cube")
        assert stored.path == tmp_path / data_name and stored.shape == (H, W, B) and stored.band_axis == 2
        np.testing.assert_allclose(stored.wavelengths, wl, atol=1e-3)


def test_envi_masks_and_no_wavelengths(tmp_path):
    cube, train, test, _ = scene(np.float32)
    write_envi(tmp_path / "cube.bsq", cube, "bsq")
    write_envi(tmp_path / "train.img", train[None], "bsq")
    write_envi(tmp_path / "test.img", test[None], "bip")
    out = run_convert(tmp_path, tmp_path / "cube.hdr", tmp_path / "train.hdr", tmp_path / "test.img")
    check_raw(out, cube, train, test)


def test_envi_header_parsing(tmp_path):
    path = tmp_path / "x.hdr"
    path.write_text(
        "ENVI\ndescription = {a\n  multi-line = text}\nSamples   = 3\nwavelength = {1.5, 2,\n 3}\n"
        "Wavelength Units = um\n"
    )
    header = parse_envi_header(path)
    assert header["samples"] == "3"
    assert header["description"] == "a\n  multi-line = text"
    assert header["wavelength units"] == "um"
    assert header["wavelength"].replace("\n", "").replace(" ", "") == "1.5,2,3"


# --------------------------------------------------------------------------- GeoTIFF
@pytest.mark.parametrize("style", ["description", "tags"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16])
def test_geotiff_round_trip(tmp_path, style, dtype):
    cube, train, test, wl = scene(dtype)
    write_geotiff(tmp_path / "cube.tif", cube, wl, style)
    write_geotiff(tmp_path / "train.tif", train)
    out = run_convert(tmp_path, tmp_path / "cube.tif", tmp_path / "train.tif", masks_npy(tmp_path, train, test)[1])
    check_raw(out, cube, train, test, wl)


def test_geotiff_without_wavelengths(tmp_path):
    cube, train, test, _ = scene()
    write_geotiff(tmp_path / "cube.tiff", cube)
    out = run_convert(tmp_path, tmp_path / "cube.tiff", *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test)


# --------------------------------------------------------------------------- MATLAB
def test_mat_v5_auto_detected_variables(tmp_path):
    cube, train, test, wl = scene(np.float64)
    hwb = cube.transpose(1, 2, 0)  # the usual MATLAB layout: rows x columns x bands
    write_mat5(tmp_path / "cube.mat", indian_pines=hwb, wavelengths_vec=wl[None])
    write_mat5(tmp_path / "gt.mat", train=train, note=np.array([[1.5, 2.5]]))
    write_mat5(tmp_path / "gt_test.mat", test=test.astype(np.float64))  # masks stored as double
    out = run_convert(tmp_path, tmp_path / "cube.mat", tmp_path / "gt.mat", tmp_path / "gt_test.mat")
    check_raw(out, cube, train, test)
    assert json.loads((out / "convert.json").read_text())["variable"] == "indian_pines"
    assert np.load(out / "test_crops.npy").dtype.kind == "u"


def test_mat_v5_named_variables_in_one_file(tmp_path):
    cube, train, test, _ = scene(np.uint16)
    write_mat5(
        tmp_path / "all.mat",
        a=cube.transpose(1, 2, 0),
        b=cube.transpose(1, 2, 0)[::-1],
        tr=train,
        te=test.astype(np.int32),
    )
    out = run_convert(
        tmp_path,
        tmp_path / "all.mat",
        tmp_path / "all.mat",
        tmp_path / "all.mat",
        var="a",
        train_var="tr",
        test_var="te",
    )
    check_raw(out, cube, train, test)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16])
def test_mat_v73_matlab_layout(tmp_path, dtype):
    cube, train, test, wl = scene(dtype)
    hwb = cube.transpose(1, 2, 0)
    write_mat73(tmp_path / "scene.mat", cube=hwb, train=train, test=test.astype(np.float64))
    stored = open_stored(tmp_path / "scene.mat", "cube")
    assert stored.shape == (H, W, B) and stored.name == "cube"  # MATLAB's order, not HDF5's
    np.testing.assert_array_equal(stored.read_all(), hwb)
    np.testing.assert_array_equal(stored.read(0, 1, 3), hwb[1:3])
    np.save(tmp_path / "wl.npy", wl)
    out = run_convert(
        tmp_path,
        tmp_path / "scene.mat",
        tmp_path / "scene.mat",
        tmp_path / "scene.mat",
        train_var="train",
        test_var="test",
        wavelengths=tmp_path / "wl.npy",
    )
    check_raw(out, cube, train, test, wl)


def test_mat_v73_logical_mask_and_band_axis_given(tmp_path):
    cube, train, test, _ = scene()
    write_mat73(tmp_path / "c.mat", c=cube.transpose(2, 0, 1))  # [W, B, H] in MATLAB
    write_mat73(tmp_path / "m.mat", m=train.T == 1)
    np.save(tmp_path / "test.npy", test.T)
    out = run_convert(tmp_path, tmp_path / "c.mat", tmp_path / "m.mat", tmp_path / "test.npy", band_axis=1)
    check_raw(out, cube.transpose(0, 2, 1), (train.T == 1).astype(np.uint8), test.T)


# --------------------------------------------------------------------------- blocks of rows
@pytest.mark.parametrize("fmt", ["npy", "bsq", "bil", "bip", "tif", "mat73", "mat5"])
@pytest.mark.parametrize("block_bytes", [1, B * W * 4 * 2])  # one row, two rows (the last block is short)
def test_cube_copied_in_blocks_of_rows(tmp_path, fmt, block_bytes):
    cube, train, test, _ = scene(np.float32)
    path = {
        "npy": tmp_path / "c.npy",
        "tif": tmp_path / "c.tif",
        "mat73": tmp_path / "c.mat",
        "mat5": tmp_path / "c.mat",
    }.get(fmt, tmp_path / "c.hdr")
    if fmt == "npy":
        np.save(path, cube.transpose(1, 0, 2))
    elif fmt == "tif":
        write_geotiff(path, cube)
    elif fmt in ("mat73", "mat5"):
        (write_mat73 if fmt == "mat73" else write_mat5)(path, c=cube.transpose(1, 2, 0))
    else:
        write_envi(tmp_path / "c.img", cube, fmt, big_endian=True)
    train_path, test_path = masks_npy(tmp_path, train, test)
    out = tmp_path / "raw"
    convert(ConvertRequest(path, train_path, test_path, out), block_bytes=block_bytes)
    check_raw(out, cube, train, test)


def test_nan_in_the_last_block_of_rows(tmp_path):
    cube, train, test, _ = scene(np.float32)
    cube[3, H - 1, :] = np.nan
    cube[5, 0, 0] = np.inf
    write_envi(tmp_path / "c.img", cube, "bip")
    with pytest.raises(HsixaiError, match=r"c.img: band 3 has 6 NaN or Inf values \(2 bands affected, 7 values"):
        convert(ConvertRequest(tmp_path / "c.hdr", *masks_npy(tmp_path, train, test), tmp_path / "raw"), block_bytes=1)
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


# --------------------------------------------------------------------------- band axis
def test_band_axis_ambiguous_without_help(tmp_path):
    cube = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)
    np.save(tmp_path / "cube.npy", cube)
    mask = np.ones((4, 4), dtype=np.uint8)
    train, test = masks_npy(tmp_path, mask, mask)
    with pytest.raises(HsixaiError, match=r"cannot tell which axis of shape \(4, 4, 4\).*pass --band-axis"):
        run_convert(tmp_path, tmp_path / "cube.npy", train, test)
    assert not (tmp_path / "raw").exists()
    out = run_convert(tmp_path, tmp_path / "cube.npy", train, test, band_axis=-1)
    np.testing.assert_array_equal(np.load(out / "hsi.npy"), cube.transpose(2, 0, 1))


def test_band_axis_from_wavelength_count_without_masks(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((5, 9, 6), dtype=np.float32))
    stored = open_stored(tmp_path / "cube.npy", "cube")
    assert resolve_band_axis(stored, None, None, 9) == 1
    with pytest.raises(HsixaiError, match="pass --band-axis"):
        resolve_band_axis(stored, None, None, 4)
    with pytest.raises(HsixaiError, match="pass --band-axis"):
        resolve_band_axis(stored, None, None, None)
    assert resolve_band_axis(stored, None, (9, 6), 9) == 0  # the masks decide first


def test_band_axis_given_must_agree_with_the_format(tmp_path):
    cube, train, test, _ = scene()
    header = write_envi(tmp_path / "c.img", cube, "bil")
    stored = open_stored(header, "cube")
    assert resolve_band_axis(stored, 1, (H, W), None) == 1
    with pytest.raises(HsixaiError, match=r"--band-axis 0 contradicts the file: bands are axis 1 .*interleave bil"):
        resolve_band_axis(stored, 0, (H, W), None)
    with pytest.raises(HsixaiError, match="out of range"):
        resolve_band_axis(stored, 3, (H, W), None)


# --------------------------------------------------------------------------- units and classes
@pytest.mark.parametrize(
    "unit,values,expected",
    [
        ("Micrometers", [0.4, 2.5], [400, 2500]),
        ("µm", [0.4], [400]),
        ("nm", [400.0], [400]),
        ("Nanometers", [0.4], [0.4]),
        (None, [0.4, 2.5], [400, 2500]),
        (None, [400, 2500], [400, 2500]),
        ("Unknown", [1.0], [1000]),
    ],
)
def test_wavelength_units(unit, values, expected):
    np.testing.assert_allclose(to_nm(np.array(values), unit, "x"), expected)


def test_wavelength_unit_not_understood():
    with pytest.raises(HsixaiError, match=r"x: wavelength units 'GHz' not understood"):
        to_nm(np.array([1.0]), "GHz", "x")


def test_classes_given_and_checked(tmp_path):
    cube, train, test, _ = scene()
    np.save(tmp_path / "cube.npy", cube)
    paths = masks_npy(tmp_path, train, test)
    out = run_convert(tmp_path, tmp_path / "cube.npy", *paths, n_classes=5)
    assert json.loads((out / "convert.json").read_text())["n_classes"] == 5
    with pytest.raises(HsixaiError, match=r"train.npy: training mask: expected labels 0..2 \(--classes\), found \[3\]"):
        run_convert(tmp_path, tmp_path / "cube.npy", *paths, n_classes=2)


def test_conversion_replaces_an_earlier_one_and_refuses_foreign_directories(tmp_path):
    cube, train, test, _ = scene()
    np.save(tmp_path / "cube.npy", cube)
    paths = masks_npy(tmp_path, train, test)
    run_convert(tmp_path, tmp_path / "cube.npy", *paths)
    np.save(tmp_path / "cube.npy", cube * 2)
    out = run_convert(tmp_path, tmp_path / "cube.npy", *paths)
    check_raw(out, cube * 2, train, test)
    with pytest.raises(HsixaiError, match=r"holds files that are not raw-format files \(cube.npy"):
        convert(ConvertRequest(tmp_path / "cube.npy", paths[0], paths[1], out=tmp_path))
    assert (tmp_path / "cube.npy").exists()


def test_float_masks_whole_numbers_only_and_never_negative(tmp_path):
    cube, train, test, _ = scene()
    np.save(tmp_path / "cube.npy", cube)
    np.save(tmp_path / "test.npy", test)
    for bad, message in (
        (-1.0, r"expected labels >= 0 \(0 = unlabelled\), found \[-1\]"),
        (np.nan, "expected integer labels, found 1 non-integer values"),
        (2.25, r"found 1 non-integer values \(e.g. 2.25\)"),
    ):
        mask = train.astype(np.float64)
        mask[1, 1] = bad
        np.save(tmp_path / "train.npy", mask)
        with pytest.raises(HsixaiError, match=message):
            run_convert(tmp_path, tmp_path / "cube.npy", tmp_path / "train.npy", tmp_path / "test.npy")
    big = train.astype(np.float32) * 300  # labels beyond uint8 keep their values
    np.save(tmp_path / "train.npy", big)
    out = run_convert(tmp_path, tmp_path / "cube.npy", tmp_path / "train.npy", tmp_path / "test.npy")
    np.testing.assert_array_equal(np.load(out / "train_crops.npy"), big.astype(np.int64))
    assert np.load(out / "train_crops.npy").dtype == np.uint16


def test_a_cube_given_as_a_mask_is_refused_unread(tmp_path):
    cube, train, test, _ = scene()
    write_geotiff(tmp_path / "cube.tif", cube)
    np.save(tmp_path / "cube.npy", cube)
    for path, found in (
        (tmp_path / "cube.tif", f"expected a single band, found {B}"),
        (tmp_path / "cube.npy", rf"expected a 2-D array, found shape \({B}, {H}, {W}\)"),
    ):
        with pytest.raises(HsixaiError, match=found):
            run_convert(tmp_path, tmp_path / "cube.npy", path, path)


# --------------------------------------------------------------------------- files from GDAL
def _gdal_envi(path: Path, cube: np.ndarray, interleave: str) -> Path:
    """An ENVI file as GDAL writes it (header, data, .aux.xml), wavelengths in µm in the ENVI domain."""
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="ENVI",
        count=cube.shape[0],
        height=cube.shape[1],
        width=cube.shape[2],
        dtype=cube.dtype,
        interleave=interleave.upper(),
        crs="EPSG:32630",
        transform=rasterio.Affine(30, 0, 230000, 0, -30, 4150000),
    ) as dst:
        dst.write(cube)
        dst.update_tags(
            ns="ENVI",
            wavelength="{" + ",".join(f"{v / 1000:.7f}" for v in scene()[3]) + "}",
            wavelength_units="Micrometers",
        )
    return path


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_written_by_gdal(tmp_path, interleave):
    cube, train, test, wl = scene(np.int16)
    _gdal_envi(tmp_path / "scene.img", cube, interleave)
    assert (tmp_path / "scene.img.aux.xml").exists()  # a sibling that must not be taken for the data file
    out = run_convert(tmp_path, tmp_path / "scene.hdr", *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test, wl)


def test_geotiff_translated_from_envi_by_gdal(tmp_path):
    # gdal_translate carries ENVI wavelengths into per-band `wavelength` / `wavelength_units` tags
    import rasterio.shutil

    cube, train, test, wl = scene(np.int16)
    _gdal_envi(tmp_path / "scene.img", cube, "bil")
    rasterio.shutil.copy(tmp_path / "scene.img", tmp_path / "scene.tif", driver="GTiff")
    out = run_convert(tmp_path, tmp_path / "scene.tif", *masks_npy(tmp_path, train, test))
    check_raw(out, cube, train, test, wl)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_writer_of_these_tests_is_read_alike_by_gdal(tmp_path, interleave):
    import rasterio

    cube, _, _, wl = scene(np.float32)
    write_envi(tmp_path / "x.dat", cube, interleave, big_endian=True, wavelengths=wl, offset=64)
    with rasterio.open(tmp_path / "x.dat") as src:
        np.testing.assert_array_equal(src.read(), cube)
        assert float(src.tags(B)["wavelength"]) == pytest.approx(wl[-1])
