"""The map grid sidecar (georef.json): from GeoTIFF, ENVI and the synthetic scene, through convert and prepare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsixai.config import SynthesizeConfig, params_from_dict
from hsixai.data import prepare, synthetic
from hsixai.data.formats import ConvertRequest, convert
from hsixai.data.georef import Georef, read_georef, synthetic_grid, write_georef
from hsixai.errors import HsixaiError
from hsixai.paths import Paths

from ..conftest import TINY_SYNTHESIZE, tiny_params
from ..writers import B, H, W, masks_npy, scene, write_envi, write_geotiff

GEOTIFF_TRANSFORM = (30.0, 0.0, 230000.0, 0.0, -30.0, 4150000.0)  # what write_geotiff writes, in EPSG:32630


def _convert(tmp_path: Path, cube_path: Path) -> Path:
    _, train, test, _ = scene()
    out = tmp_path / "raw"
    convert(ConvertRequest(cube_path, *masks_npy(tmp_path, train, test), out))
    return out


def test_geotiff_keeps_crs_and_transform_through_convert_and_prepare(tmp_path):
    cube, _, _, wl = scene(np.float32)
    write_geotiff(tmp_path / "cube.tif", cube, wl)
    out = _convert(tmp_path, tmp_path / "cube.tif")
    sidecar = json.loads((out / "georef.json").read_text())
    assert sidecar["crs"] == "EPSG:32630" and sidecar["transform"] == list(GEOTIFF_TRANSFORM)
    assert (sidecar["height"], sidecar["width"]) == (H, W)

    params = params_from_dict(
        tiny_params(data={"raw_dir": str(out), "class_names": ["a", "b", "c"], "remove_bands": [0]})
    )
    paths = Paths.at(tmp_path / "root")
    prepare.run(params, paths, progress=False)
    grid = read_georef(paths.prepared_dir, (H, W))
    # written back through rasterio, the prepared grid is the source's
    with rasterio.open(
        tmp_path / "back.tif",
        "w",
        driver="GTiff",
        count=1,
        height=H,
        width=W,
        dtype="float32",
        crs=grid.crs,
        transform=rasterio.Affine(*grid.transform),
    ) as dst:
        dst.write(np.load(paths.prepared_cube)[:1])
    with rasterio.open(tmp_path / "back.tif") as back, rasterio.open(tmp_path / "cube.tif") as source:
        assert back.crs == source.crs and back.transform == source.transform


def test_envi_map_info_written_by_hand(tmp_path):
    cube, train, test, wl = scene(np.int16)
    header = write_envi(tmp_path / "c.img", cube, "bil", wavelengths=wl)
    header.write_text(
        header.read_text() + "map info = {UTM, 1.000, 1.000, 230000.000, 4150000.000, 30.000, 30.000, "
        "30, North, WGS-84, units=Meters}\n"
    )
    out = _convert(tmp_path, header)
    grid = read_georef(out, (H, W))
    assert grid.crs == "EPSG:32630" and grid.transform == GEOTIFF_TRANSFORM


def test_envi_written_by_gdal_keeps_its_grid(tmp_path):
    cube, _, _, _ = scene(np.float32)
    with rasterio.open(
        tmp_path / "g.img",
        "w",
        driver="ENVI",
        count=B,
        height=H,
        width=W,
        dtype="float32",
        crs="EPSG:32629",
        transform=rasterio.Affine(10, 0, 750000, 0, -10, 4120020),
    ) as dst:
        dst.write(cube)
    out = _convert(tmp_path, tmp_path / "g.hdr")
    grid = read_georef(out, (H, W))
    assert grid.crs == "EPSG:32629" and grid.transform == (10.0, 0.0, 750000.0, 0.0, -10.0, 4120020.0)


def test_sources_without_a_grid_write_no_sidecar(tmp_path):
    cube, _, _, _ = scene()
    np.save(tmp_path / "c.npy", cube)
    out = _convert(tmp_path, tmp_path / "c.npy")
    assert not (out / "georef.json").exists()
    assert json.loads((out / "convert.json").read_text())["georef"] is None
    write_envi(tmp_path / "e.img", cube, "bsq")  # no map info
    out2 = tmp_path / "raw2"
    _, train, test, _ = scene()
    convert(ConvertRequest(tmp_path / "e.hdr", *masks_npy(tmp_path, train, test), out2))
    assert not (out2 / "georef.json").exists()


def test_sidecar_round_trip_and_checks(tmp_path):
    grid = Georef("EPSG:32632", (30.0, 0.0, 1.0, 0.0, -30.0, 2.0), width=W, height=H, source="test")
    write_georef(tmp_path, grid)
    assert read_georef(tmp_path, (H, W)) == grid
    assert read_georef(tmp_path / "nowhere", (H, W)) is None
    with pytest.raises(
        HsixaiError,
        match=rf"georef.json: expected the grid of the cube's H x W \({H + 1}, {W}\), "
        rf"found height {H}, width {W}",
    ):
        read_georef(tmp_path, (H + 1, W))
    path = tmp_path / "georef.json"
    for content, message in (
        ("{", "not a readable JSON file"),
        ('{"crs": "EPSG:32632"}', "expected an object with 'crs'"),
        (json.dumps({**grid.to_json(), "transform": [30, 0, 1]}), "'transform': expected six finite numbers"),
        (json.dumps({**grid.to_json(), "transform": [0, 0, 1, 0, 0, 2]}), "expected an invertible affine map"),
        (json.dumps({**grid.to_json(), "width": 0}), "'width' and 'height': expected positive integers"),
        (json.dumps({**grid.to_json(), "crs": "EPSG:999999"}), "coordinate reference system not understood"),
    ):
        path.write_text(content)
        with pytest.raises(HsixaiError, match=message):
            read_georef(tmp_path, (H, W))


def test_same_grid_tolerates_rounding_only():
    grid = Georef("EPSG:32632", (30.0, 0.0, 300000.0, 0.0, -30.0, 4500030.0), 7, 6)
    wkt = rasterio.crs.CRS.from_epsg(32632).to_wkt()
    assert grid.same_grid(Georef(wkt, (30.0, 0.0, 300000.00001, 0.0, -30.0, 4500030.0), 7, 6))
    assert not grid.same_grid(Georef("EPSG:32632", (30.0, 0.0, 300015.0, 0.0, -30.0, 4500030.0), 7, 6))
    assert not grid.same_grid(Georef("EPSG:32633", grid.transform, 7, 6))
    assert not grid.same_grid(Georef("EPSG:32632", grid.transform, 6, 7))


def test_synthetic_scene_lies_near_seville_on_a_30_m_utm_29n_grid(tmp_path):
    from rasterio.warp import transform

    out = tmp_path / "scene"
    synthetic.synthesize(SynthesizeConfig(**TINY_SYNTHESIZE), 0, out, progress=False)
    grid = read_georef(out, (TINY_SYNTHESIZE["height"], TINY_SYNTHESIZE["width"]))
    assert grid == synthetic_grid(TINY_SYNTHESIZE["height"], TINY_SYNTHESIZE["width"])
    assert grid.crs == "EPSG:32629" and (grid.transform[0], grid.transform[4]) == (30.0, -30.0)
    # any size is centred near Isla Mayor; the full PRISMA size (1215 x 1091) stays within 60 km of Seville
    # (37.39 N, 5.98 W)
    centre = rasterio.Affine(*grid.transform) @ (TINY_SYNTHESIZE["width"] / 2, TINY_SYNTHESIZE["height"] / 2)
    lon, lat = transform(grid.crs, "EPSG:4326", [centre[0]], [centre[1]])
    assert abs(lon[0] + 6.13) < 0.01 and abs(lat[0] - 37.13) < 0.01, (lon, lat)
    assert all(v % 30 == 0 for v in grid.transform)
    full = synthetic_grid(1215, 1091)
    affine = rasterio.Affine(*full.transform)
    corners = [affine @ (c, r) for c, r in ((0, 0), (1091, 0), (0, 1215), (1091, 1215))]
    lons, lats = transform(full.crs, "EPSG:4326", [x for x, _ in corners], [y for _, y in corners])
    km = [
        np.hypot((lon + 5.98) * 111.32 * np.cos(np.radians(37.39)), (lat - 37.39) * 110.57)
        for lon, lat in zip(lons, lats)
    ]
    assert max(km) < 60, km
    assert all(36.9 < lat < 37.35 for lat in lats) and all(-6.35 < lon < -5.9 for lon in lons), (lons, lats)
