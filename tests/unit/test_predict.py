"""hsixai predict on tiny arrays: streaming, windows, masks, no-data, georeferencing, and every bad input.

The bundle here is written by hand (two randomly initialised cnn2d instances) so that no training is needed;
tests/pipeline/test_predict_pipeline.py checks a trained point's map against evaluate's predictions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from hsixai import bundle as bundles
from hsixai.cli import main
from hsixai.data.formats import ConvertRequest, convert
from hsixai.data.georef import read_georef, synthetic_grid, write_georef
from hsixai.data.patches import PatchSampler
from hsixai.errors import HsixaiError
from hsixai.models import build_model
from hsixai.models.inference import predict
from hsixai.paths import BUNDLE_META, RAW_CUBE, RAW_NODATA, RAW_WAVELENGTHS, MapFiles, instance_checkpoint
from hsixai.predict import MapOptions, Window, predict_map
from hsixai.runtime import save_checkpoint

from ..writers import write_geotiff

RAW_BANDS, HEIGHT, WIDTH = 8, 13, 11
KEPT = [1, 2, 3, 5, 6]
PATCH = 3
CLASSES = ["wheat", "rice", "olives"]
WAVELENGTHS = np.linspace(400.0, 2400.0, RAW_BANDS)


def _cube(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(RAW_BANDS, HEIGHT, WIDTH)) * 50 + 300).astype(np.float32)


def make_bundle(directory: Path, cube: np.ndarray, instances: int = 2) -> Path:
    """A bundle of randomly initialised cnn2d instances, scaled to `cube`'s range like prepare would."""
    directory.mkdir(parents=True)
    torch.manual_seed(0)
    for i in range(instances):
        net = build_model("cnn2d", len(KEPT), len(CLASSES), PATCH, 4).eval()
        meta = {"model": "cnn2d", "patch_size": PATCH, "n_bands": len(KEPT), "n_classes": len(CLASSES), "n_comps": 4}
        save_checkpoint(instance_checkpoint(directory, i), net.state_dict(), meta)
    kept = cube[KEPT]
    rng = np.random.default_rng(1)
    meta = bundles.BundleMeta(
        format=bundles.FORMAT,
        model="cnn2d",
        patch_size=PATCH,
        n_instances=instances,
        class_names=CLASSES,
        raw_bands=RAW_BANDS,
        bands=KEPT,
        wavelengths=WAVELENGTHS[KEPT].tolist(),
        wavelength_unit="nm",
        band_min=kept.min(axis=(1, 2)).tolist(),
        band_max=kept.max(axis=(1, 2)).tolist(),
        mean=rng.uniform(0.3, 0.6, len(KEPT)).tolist(),
        std=rng.uniform(0.1, 0.3, len(KEPT)).tolist(),
        fill=rng.uniform(0.2, 0.8, len(KEPT)).tolist(),
        fill_method="test",
        probabilities=bundles.PROBABILITIES,
        source={"point": "test"},
    )
    (directory / BUNDLE_META).write_text(json.dumps(asdict(meta)))
    return directory


def make_raw(directory: Path, cube: np.ndarray, georef: bool = True, nodata: np.ndarray | None = None) -> Path:
    directory.mkdir(parents=True)
    np.save(directory / RAW_CUBE, cube)
    np.save(directory / RAW_WAVELENGTHS, WAVELENGTHS)
    if georef:
        write_georef(directory, synthetic_grid(cube.shape[1], cube.shape[2]))
    if nodata is not None:
        np.save(directory / RAW_NODATA, nodata)
    return directory


@pytest.fixture
def setup(tmp_path: Path):
    cube = _cube()
    return cube, make_raw(tmp_path / "raw", cube), make_bundle(tmp_path / "bundle", cube)


def reference(cube: np.ndarray, bundle: bundles.Bundle, missing: np.ndarray | None = None) -> np.ndarray:
    """The evaluation path: one PatchSampler over the whole scaled cube, every pixel; mean softmax [H, W, K]."""
    meta = bundle.meta
    scaled = meta.scale(cube[meta.bands])
    if missing is not None:
        scaled[:, missing] = np.asarray(meta.fill, dtype=np.float32)[:, None]
    sampler = PatchSampler(scaled, np.asarray(meta.mean), np.asarray(meta.std), meta.patch_size)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    centres = sampler.centres(rows.ravel(), cols.ravel())
    probs = [torch.softmax(torch.from_numpy(predict(m, sampler, centres, 64)), 1).numpy() for m in bundle.models]
    return np.mean(probs, axis=0).reshape(HEIGHT, WIDTH, -1)


def run_map(scene: Path, bundle_dir: Path, out: Path, **options) -> tuple[np.ndarray, np.ndarray, dict]:
    bundle = bundles.load_bundle(bundle_dir)
    files = MapFiles(out)
    summary = predict_map(scene, bundle, files.files, MapOptions(**options), progress=False)
    with rasterio.open(files.classes) as src:
        codes = src.read(1)
    with rasterio.open(files.probability) as src:
        probs = src.read()
    return codes, probs, summary


def test_map_is_the_evaluation_path_at_every_pixel_border_included(setup, tmp_path):
    cube, raw, bundle_dir = setup
    expected = reference(cube, bundles.load_bundle(bundle_dir))
    codes, probs, summary = run_map(raw, bundle_dir, tmp_path / "map.tif")
    assert len(set(expected.argmax(axis=2).ravel().tolist())) > 1  # the check can tell classes apart
    np.testing.assert_array_equal(codes, expected.argmax(axis=2) + 1)
    np.testing.assert_allclose(probs[0], expected.max(axis=2), atol=1e-6)
    assert summary["classified_pixels"] == HEIGHT * WIDTH


@pytest.mark.parametrize("block_rows", [1, 2, 5])
def test_streaming_in_row_blocks_gives_the_one_block_map(setup, tmp_path, block_rows):
    _, raw, bundle_dir = setup
    whole = run_map(raw, bundle_dir, tmp_path / "whole.tif", block_rows=HEIGHT, softmax=True)
    blocks = run_map(raw, bundle_dir, tmp_path / "blocks.tif", block_rows=block_rows, softmax=True)
    np.testing.assert_array_equal(blocks[0], whole[0])
    np.testing.assert_allclose(blocks[1], whole[1], atol=1e-6)


def test_softmax_option_writes_every_class_summing_to_one(setup, tmp_path):
    _, raw, bundle_dir = setup
    codes, probs, _ = run_map(raw, bundle_dir, tmp_path / "map.tif", softmax=True)
    assert probs.shape == (len(CLASSES), HEIGHT, WIDTH)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(codes, probs.argmax(axis=0) + 1)


def test_window_is_the_full_map_cut_out_with_its_grid_moved(setup, tmp_path):
    _, raw, bundle_dir = setup
    full, _, _ = run_map(raw, bundle_dir, tmp_path / "full.tif")
    part, _, _ = run_map(raw, bundle_dir, tmp_path / "part.tif", window=Window(2, 7, 9, 4), block_rows=2)
    np.testing.assert_array_equal(part, full[2:11, 7:11])
    grid = synthetic_grid(HEIGHT, WIDTH)
    with rasterio.open(tmp_path / "part.tif") as src:
        assert src.crs.to_string() == grid.crs
        assert src.transform.c == grid.transform[2] + 7 * 30 and src.transform.f == grid.transform[5] - 2 * 30


def test_mask_restricts_the_classified_pixels(setup, tmp_path):
    _, raw, bundle_dir = setup
    full, _, _ = run_map(raw, bundle_dir, tmp_path / "full.tif")
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[3:6, 2:9] = 1
    mask[10, 0] = 7
    np.save(tmp_path / "mask.npy", mask)
    codes, probs, summary = run_map(raw, bundle_dir, tmp_path / "masked.tif", mask=tmp_path / "mask.npy")
    np.testing.assert_array_equal(codes, np.where(mask != 0, full, 0))
    assert np.isnan(probs[0][mask == 0]).all() and not np.isnan(probs[0][mask != 0]).any()
    assert summary["classified_pixels"] == int((mask != 0).sum())


def test_pixels_without_data_are_not_classified_and_filled_for_their_neighbours(tmp_path):
    cube = _cube()
    nodata = np.zeros((HEIGHT, WIDTH), dtype=bool)
    nodata[4:6, 3:5] = True
    cube[:, 4:6, 3:5] = np.nan
    cube[2, 9, 9] = np.inf  # a non-finite value in a kept band: no data there too
    missing = nodata.copy()
    missing[9, 9] = True
    raw = make_raw(tmp_path / "raw", cube, nodata=nodata)
    bundle_dir = make_bundle(tmp_path / "bundle", np.nan_to_num(cube, nan=300.0, posinf=300.0))
    codes, probs, summary = run_map(raw, bundle_dir, tmp_path / "map.tif")
    expected = reference(cube, bundles.load_bundle(bundle_dir), missing)
    assert (codes[missing] == 0).all() and np.isnan(probs[0][missing]).all()
    np.testing.assert_array_equal(codes[~missing], expected.argmax(axis=2)[~missing] + 1)
    assert summary["nodata_pixels"] == int(missing.sum())


def test_geotiff_source_keeps_crs_and_transform_through_convert_and_predict(tmp_path):
    cube = _cube()
    tif = write_geotiff(tmp_path / "scene.tif", cube, WAVELENGTHS)
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    labels[0, :3] = [1, 2, 3]
    np.save(tmp_path / "labels.npy", labels)
    raw = tmp_path / "raw"
    convert(ConvertRequest(tif, tmp_path / "labels.npy", tmp_path / "labels.npy", raw))
    bundle_dir = make_bundle(tmp_path / "bundle", cube)
    from_raw, _, _ = run_map(raw, bundle_dir, tmp_path / "from_raw.tif")
    from_tif, _, _ = run_map(tif, bundle_dir, tmp_path / "from_tif.tif")
    np.testing.assert_array_equal(from_raw, from_tif)
    with rasterio.open(tif) as source:
        for out in ("from_raw.tif", "from_raw.probability.tif", "from_tif.tif"):
            with rasterio.open(tmp_path / out) as back:
                assert back.crs == source.crs and back.transform == source.transform, out
    assert read_georef(raw, (HEIGHT, WIDTH)).crs == "EPSG:32630"


def test_map_metadata_colour_table_and_names(setup, tmp_path):
    _, raw, bundle_dir = setup
    run_map(raw, bundle_dir, tmp_path / "map.tif")
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.dtypes == ("uint8",) and src.nodata == 0
        assert src.colormap(1)[1] == (230, 194, 41, 255)  # plots.CROP_COLOURS[0], #e6c229
        assert [src.tags(1)[f"CLASS_{i + 1}"] for i in range(3)] == CLASSES
        assert json.loads(src.tags()["CLASS_NAMES"]) == CLASSES
        assert "mean over the instances" in src.tags()["PROBABILITIES"]
    with rasterio.open(tmp_path / "map.probability.tif") as src:
        assert src.dtypes == ("float32",)
    assert (tmp_path / "map.png").stat().st_size > 0


def test_pixel_grid_without_georef(tmp_path):
    cube = _cube()
    raw = make_raw(tmp_path / "raw", cube, georef=False)
    run_map(raw, make_bundle(tmp_path / "bundle", cube), tmp_path / "map.tif")
    with rasterio.open(tmp_path / "map.tif") as src:
        assert src.crs is None and src.transform == rasterio.Affine.identity()


def test_scale_is_prepares_arithmetic():
    raw = np.array([[1.0, 2.5, 7.0], [3.0, 3.0, 3.0]], dtype=np.float32)
    meta = replace(_meta_stub(), band_min=[1.0, 3.0], band_max=[5.0, 3.0], bands=[0, 1])
    scaled = meta.scale(raw)
    band = raw[0].copy()
    band -= 1.0
    band /= 5.0 - 1.0
    np.clip(band, 0.0, 1.0, out=band)
    np.testing.assert_array_equal(scaled[0], band)  # clipped to [0, 1] like prepare
    np.testing.assert_array_equal(scaled[1], 0.0)  # a dead band is zeros


def _meta_stub() -> bundles.BundleMeta:
    fields = bundles.BundleMeta.__dataclass_fields__
    return bundles.BundleMeta(**{k: None for k in fields})


# --------------------------------------------------------------------------- bad input: one line, exit 2, nothing
def _cli(capsys, scene: Path, bundle_dir: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["--no-progress", "predict", str(scene), "--model", str(bundle_dir), "--out", str(out), *extra])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, out: Path, *words: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hsixai predict: error:"), err
    for word in words:
        assert word in lines[0], lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [], "something was written"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "maps").mkdir()
    return tmp_path / "maps" / "map.tif"


def test_bad_band_count(setup, tmp_path, out, capsys):
    cube, _, bundle_dir = setup
    raw = make_raw(tmp_path / "fewer", cube[:-1])
    np.save(raw / RAW_WAVELENGTHS, WAVELENGTHS[:-1])
    _assert_refused(*_cli(capsys, raw, bundle_dir, out), out, str(raw), "expected 8 bands", "found 7")


def test_bad_wavelengths_name_the_first_mismatch(setup, out, capsys):
    _, raw, bundle_dir = setup
    shifted = WAVELENGTHS.copy()
    shifted[3] += 4.0
    shifted[5] += 10.0
    np.save(raw / RAW_WAVELENGTHS, shifted)
    code, err = _cli(capsys, raw, bundle_dir, out)
    _assert_refused(code, err, out, "band 3 is at", f"expected {WAVELENGTHS[3]:.2f} nm +- 3", "2 of 5")
    assert _cli(capsys, raw, bundle_dir, out, "--wavelength-tolerance", "12")[0] == 0  # within a wider tolerance


def test_mask_of_another_shape(setup, tmp_path, out, capsys):
    _, raw, bundle_dir = setup
    np.save(tmp_path / "mask.npy", np.ones((HEIGHT, WIDTH + 1), dtype=np.uint8))
    code, err = _cli(capsys, raw, bundle_dir, out, "--mask", str(tmp_path / "mask.npy"))
    _assert_refused(code, err, out, "mask.npy", f"expected shape {(HEIGHT, WIDTH)}")


def test_geotiff_mask_on_another_grid(setup, tmp_path, out, capsys):
    _, raw, bundle_dir = setup
    write_geotiff(tmp_path / "mask.tif", np.ones((HEIGHT, WIDTH), dtype=np.uint8))  # EPSG:32630, not the scene's
    code, err = _cli(capsys, raw, bundle_dir, out, "--mask", str(tmp_path / "mask.tif"))
    _assert_refused(code, err, out, "mask.tif", "expected the scene's grid (EPSG:32629")


@pytest.mark.parametrize("window", [("0", "0", "14", "11"), ("-1", "0", "2", "2"), ("5", "10", "2", "2")])
def test_window_outside_the_scene(setup, out, capsys, window):
    _, raw, bundle_dir = setup
    code, err = _cli(capsys, raw, bundle_dir, out, "--window", *window)
    _assert_refused(code, err, out, "--window", f"{HEIGHT} x {WIDTH}")


def test_missing_bundle(setup, tmp_path, out, capsys):
    _, raw, _ = setup
    code, err = _cli(capsys, raw, tmp_path / "nowhere", out)
    _assert_refused(code, err, out, "nowhere", "model bundle not found")


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / BUNDLE_META).write_text("{not json"), ["bundle.json", "not a readable JSON"]),
        (lambda d: (d / BUNDLE_META).write_text('{"format": "other"}'), ["bundle.json", "found format 'other'"]),
        (lambda d: instance_checkpoint(d, 1).write_bytes(b"garbage"), ["instance_1.pt", "tensors-only checkpoint"]),
        # 'j' is a pickle opcode that reads 4 more bytes: torch's unpickler raised struct.error (a traceback)
        (lambda d: instance_checkpoint(d, 1).write_bytes(b"junk"), ["instance_1.pt", "not a readable checkpoint"]),
        (lambda d: instance_checkpoint(d, 0).unlink(), ["instance_0.pt", "checkpoint not found"]),
        (lambda d: torch.save({"state_dict": {}, "meta": {}, "code": print}, instance_checkpoint(d, 0)), ["refused"]),
    ],
)
def test_corrupt_bundle(setup, out, capsys, damage, words):
    _, raw, bundle_dir = setup
    damage(bundle_dir)
    _assert_refused(*_cli(capsys, raw, bundle_dir, out), out, *words)


def test_bundle_metadata_that_contradicts_the_checkpoints(setup, out, capsys):
    _, raw, bundle_dir = setup
    meta = json.loads((bundle_dir / BUNDLE_META).read_text())
    (bundle_dir / BUNDLE_META).write_text(json.dumps({**meta, "patch_size": 5}))
    _assert_refused(*_cli(capsys, raw, bundle_dir, out), out, "instance_0.pt", "(model, patch size, bands, classes)")


def test_an_error_midway_leaves_the_earlier_map_untouched(setup, out, monkeypatch):
    _, raw, bundle_dir = setup
    run_map(raw, bundle_dir, out)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    from hsixai import predict as module

    def fail(*args, **kwargs):
        raise HsixaiError("stop")

    monkeypatch.setattr(module, "_mean_probabilities", fail)
    assert main(["--no-progress", "predict", str(raw), "--model", str(bundle_dir), "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


def test_default_model_needs_a_selection(setup, tmp_path, out, capsys):
    _, raw, _ = setup
    code = main(["--root", str(tmp_path), "--no-progress", "predict", str(raw), "--out", str(out)])
    _assert_refused(code, capsys.readouterr().err, out, "selection.json", "no selection found")


def _selection(root: Path, groups: dict) -> None:
    (root / "reports").mkdir()
    (root / "reports" / "selection.json").write_text(json.dumps({"x": "patch_size", "groups": groups}))


def _group(experiment: str) -> dict:
    return {
        "recommended": {"patch_size": 5},
        "rows": [{"patch_size": 3, "experiment": "other"}, {"patch_size": 5, "experiment": experiment}],
    }


def test_default_model_with_several_groups_needs_group(setup, tmp_path, out, capsys):
    _, raw, _ = setup
    _selection(tmp_path, {"model=cnn2d": _group("a"), "model=vit": _group("b")})
    code = main(["--root", str(tmp_path), "--no-progress", "predict", str(raw), "--out", str(out)])
    _assert_refused(code, capsys.readouterr().err, out, "2 groups (model=cnn2d, model=vit)", "--group")
    code = main(["--root", str(tmp_path), "predict", str(raw), "--out", str(out), "--group", "model=x"])
    _assert_refused(code, capsys.readouterr().err, out, "--group: expected one of model=cnn2d, model=vit")


def test_default_model_names_an_experiment_this_repository_lacks(setup, tmp_path, out, capsys):
    _, raw, _ = setup
    _selection(tmp_path, {"model=vit": _group("gone-p5")})
    code = main(["--root", str(tmp_path), "predict", str(raw), "--out", str(out), "--group", "model=vit"])
    _assert_refused(code, capsys.readouterr().err, out, "DVC experiment 'gone-p5'", "found 0")


def test_sweep_maps_each_groups_recommended_point_into_reports(tmp_path):
    from hsixai.config import Params
    from hsixai.paths import Paths
    from hsixai.sweep import map_commands

    report = {
        "x": "patch_size",
        "groups": {"model=cnn2d": _group("a"), "model=vit": {"recommended": {"patch_size": None}, "rows": []}},
    }
    paths = Paths.at(tmp_path)
    (fresh_clone,) = map_commands(Params(), paths, report, progress=False)
    assert fresh_clone[:5] == ["hsixai", "--no-progress", "predict", "data/synthetic", "--scene-from-experiment"]
    (tmp_path / "data" / "synthetic").mkdir(parents=True)
    (command,) = map_commands(Params(), paths, report, progress=False)
    out = tmp_path / "reports" / "map_model_cnn2d.tif"
    assert command[:4] == ["hsixai", "--no-progress", "predict", str(tmp_path / "data" / "synthetic")]
    assert command[command.index("--group") + 1] == "model=cnn2d" and command[command.index("--out") + 1] == str(out)
    assert "--scene-from-experiment" not in command
    assert paths.selection_report().recommended_map("all").classes.name == "map_all.tif"
