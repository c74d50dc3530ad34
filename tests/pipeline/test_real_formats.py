"""The tiny synthetic scene written as GeoTIFF, ENVI and .mat, converted back with `hsixai convert`,
and pushed through the pipeline: the converted raw directories must give the very same numbers.
Written as a PRISMA L2D product (reflectance quantized to 16-bit DN), it comes back within half a DN."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from hsixai import evaluate, train
from hsixai.cli import main
from hsixai.config import params_from_dict
from hsixai.data import prepare, split
from hsixai.paths import Paths
from hsixai.xai import attributions, consistency

from ..conftest import TINY_TRAIN, tiny_params
from ..helpers import write_params
from ..writers import write_envi, write_geotiff, write_l2d_scene, write_mat5, write_mat73

pytestmark = pytest.mark.pipeline

# Training cut to a few batches and a coarse map: the point is equal numbers on both paths, not good ones.
FAST_TRAIN = {**TINY_TRAIN, "epochs": 1, "max_batches_per_epoch": 4}
FAST_EVALUATE = {"map_stride": 2}
PREPARED = ("cube.npy", "training_mask.npy", "test_labels.npy", "bands.npy", "band_range.npy")
SPLIT = ("train_labels.npy", "dev_labels.npy", "xai_labels.npy", "band_stats.npz")


def _write_sources(raw: Path, src: Path) -> dict[str, list[str]]:
    """The synthetic raw scene in each real format; returns each format's `convert` arguments."""
    cube, train_mask, test_mask = (np.load(raw / n) for n in ("hsi.npy", "train_crops.npy", "test_crops.npy"))
    wl = np.load(raw / "wavelengths.npy").astype(np.float64)
    hwb = cube.transpose(1, 2, 0)  # rows x columns x bands, as MATLAB users keep cubes
    src.mkdir()
    np.savetxt(src / "wavelengths.txt", wl, fmt="%.6f")

    write_geotiff(src / "prisma.tif", cube, wl, style="description")
    write_geotiff(src / "train.tif", train_mask)
    write_geotiff(src / "test.tif", test_mask)
    write_envi(src / "prisma.bil", cube, "bil", big_endian=True, wavelengths=wl / 1000, units="Micrometers")
    write_envi(src / "train_gt.img", train_mask[None], "bsq")
    write_envi(src / "test_gt.img", test_mask[None], "bsq")
    write_mat73(src / "prisma73.mat", cube=hwb, train_gt=train_mask, test_gt=test_mask)
    write_mat5(src / "prisma5.mat", hsi=hwb)
    write_mat5(src / "train5.mat", train_gt=train_mask)
    write_mat5(src / "test5.mat", test_gt=test_mask.astype(np.float64))  # MATLAB's default class
    return {
        "geotiff": [f"{src}/prisma.tif", "--train", f"{src}/train.tif", "--test", f"{src}/test.tif"],
        "envi": [f"{src}/prisma.hdr", "--train", f"{src}/train_gt.hdr", "--test", f"{src}/test_gt.img"],
        "mat73": [
            f"{src}/prisma73.mat",
            "--train",
            f"{src}/prisma73.mat",
            "--train-var",
            "train_gt",
            "--test",
            f"{src}/prisma73.mat",
            "--test-var",
            "test_gt",
            "--wavelengths",
            f"{src}/wavelengths.txt",
        ],
        "mat5": [
            f"{src}/prisma5.mat",
            "--train",
            f"{src}/train5.mat",
            "--test",
            f"{src}/test5.mat",
            "--wavelengths",
            f"{raw}/wavelengths.npy",
        ],
    }


@pytest.fixture(scope="module")
def converted(prepared_root: Path, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("real_formats")
    outs = {}
    for name, args in _write_sources(prepared_root / "data/synthetic", base / "sources").items():
        outs[name] = base / "raw" / name
        assert main(["--no-progress", "convert", *args, "--out", str(outs[name])]) == 0, name
    return outs


def test_converted_dirs_equal_the_synthetic_scene(converted, prepared_root):
    raw = prepared_root / "data/synthetic"
    cube = np.load(raw / "hsi.npy")
    for name, out in converted.items():
        got = np.load(out / "hsi.npy")
        assert got.dtype == cube.dtype and got.shape == cube.shape, name
        assert got.tobytes() == cube.tobytes(), name
        for mask in ("train_crops.npy", "test_crops.npy"):
            got_mask = np.load(out / mask)
            assert got_mask.dtype == np.uint8 and got_mask.flags.c_contiguous, f"{name} {mask}"
            np.testing.assert_array_equal(got_mask, np.load(raw / mask), err_msg=f"{name} {mask}")
        np.testing.assert_allclose(
            np.load(out / "wavelengths.npy"), np.load(raw / "wavelengths.npy"), atol=1e-3, rtol=0, err_msg=name
        )
        meta = json.loads((out / "convert.json").read_text())
        assert meta["shape"] == list(cube.shape) and meta["n_classes"] == 6, name
        assert meta["band_axis"] == {"geotiff": 0, "envi": 1, "mat73": 2, "mat5": 2}[name]


def _run(root: Path, raw_dir: Path | str, stages) -> Paths:
    params = tiny_params(patch_size=5, train=FAST_TRAIN, evaluate=FAST_EVALUATE, data={"raw_dir": str(raw_dir)})
    write_params(root, params)
    parsed, paths = params_from_dict(params), Paths.at(root)
    for stage in stages:
        stage.run(parsed, paths, progress=False)
    return paths


def _finite_numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    return [obj] if isinstance(obj, float) else []


def test_grids_kept_through_convert_and_prepare(converted, prepared_root, tmp_path):
    # the GeoTIFF's grid (written by write_geotiff) and the synthetic scene's own, each copied by prepare
    expected = {"geotiff": ("EPSG:32630", [30.0, 0.0, 230000.0, 0.0, -30.0, 4150000.0])}
    for name, out in converted.items():
        paths = _run(tmp_path / name, out, (prepare,))
        if name in expected:
            grid = json.loads((out / "georef.json").read_text())
            assert (grid["crs"], grid["transform"]) == expected[name]
            assert (paths.prepared_dir / "georef.json").read_bytes() == (out / "georef.json").read_bytes()
        else:  # ENVI without map info, .mat: the pixel grid
            assert not (out / "georef.json").exists() and not (paths.prepared_dir / "georef.json").exists(), name
    synthetic = json.loads((prepared_root / "data/prepared/georef.json").read_text())
    assert synthetic["crs"] == "EPSG:32629" and synthetic["transform"][0] == 30.0


def test_prisma_l2d_of_the_synthetic_scene(prepared_root, tmp_path):
    raw = prepared_root / "data/synthetic"
    cube, wl = np.load(raw / "hsi.npy"), np.load(raw / "wavelengths.npy")
    write_l2d_scene(tmp_path / "PRS_L2D_STD.he5", cube, wl)
    out = tmp_path / "raw"
    assert (
        main(
            [
                "--no-progress",
                "convert",
                str(tmp_path / "PRS_L2D_STD.he5"),
                "--train",
                str(raw / "train_crops.npy"),
                "--test",
                str(raw / "test_crops.npy"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = np.load(out / "hsi.npy")
    assert got.shape == cube.shape and np.abs(got - cube).max() <= 0.5 / 65535 + 1e-7
    np.testing.assert_allclose(np.load(out / "wavelengths.npy"), wl, rtol=0, atol=1e-4)
    assert json.loads((out / "georef.json").read_text())["transform"] == [30.0, 0.0, 752550.0, 0.0, -30.0, 4115550.0]
    # through prepare and split: the same labels and split as the synthetic scene, the cube within quantization
    paths = _run(tmp_path / "root", out, (prepare, split))
    reference = Paths.at(prepared_root)
    for f in ("training_mask.npy", "test_labels.npy", "bands.npy"):
        assert (paths.prepared_dir / f).read_bytes() == (reference.prepared_dir / f).read_bytes(), f
    for f in ("train_labels.npy", "dev_labels.npy", "xai_labels.npy"):
        assert (paths.split_dir / f).read_bytes() == (reference.split_dir / f).read_bytes(), f
    band_range = np.load(reference.prepared_dir / "band_range.npy")
    tolerance = (0.5 / 65535 + 1e-7) * 2 / (band_range[1] - band_range[0])  # min-max scaling magnifies the step
    diff = np.abs(np.load(paths.prepared_cube) - np.load(reference.prepared_cube)).max(axis=(1, 2))
    assert (diff <= tolerance + 1e-6).all()


def test_pipeline_on_converted_dirs(converted, prepared_root, tmp_path, mlflow_uri):
    reference = tmp_path / "npy"
    shutil.copytree(prepared_root, reference)
    ref = _run(reference, "data/synthetic", (train, evaluate, attributions, consistency))

    for name, out in converted.items():
        # every format: the same prepared cube and split, byte for byte
        paths = _run(tmp_path / name, out, (prepare, split))
        for f in PREPARED:
            assert (paths.prepared_dir / f).read_bytes() == (ref.prepared_dir / f).read_bytes(), f"{name} {f}"
        for f in SPLIT:
            assert (paths.split_dir / f).read_bytes() == (ref.split_dir / f).read_bytes(), f"{name} {f}"
        np.testing.assert_allclose(
            np.load(paths.prepared_dir / "wavelengths.npy"),
            np.load(ref.prepared_dir / "wavelengths.npy"),
            atol=1e-3,
            rtol=0,
        )
        assert json.loads((paths.prepared_dir / "meta.json").read_text())["raw_dir"] == str(out)

    # the most transformed input (big-endian BIL, wavelengths in µm) all the way through: the same numbers
    envi = _run(tmp_path / "envi", converted["envi"], (train, evaluate, attributions, consistency))
    for stage in ("evaluate", "consistency"):
        got, want = (json.loads(p.metrics(stage).read_text()) for p in (envi, ref))
        numbers = _finite_numbers(got)
        assert numbers and all(math.isfinite(x) for x in numbers), stage
        assert got == want, stage
    scores = json.loads(envi.metrics("evaluate").read_text())
    assert 0 < scores["f1_macro"] <= 1
    assert json.loads(envi.metrics("consistency").read_text())["consistency_jsdiv"] is not None
